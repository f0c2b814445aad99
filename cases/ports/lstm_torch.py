"""An embedding, a one-layer LSTM and a linear head on the last time step, in torch.

``SeqModel``: ``embed`` nn.Embedding(20, 8) -> ``lstm`` nn.LSTM(8, 12, batch_first=True) ->
``head`` nn.Linear(12, 5) applied to the output of the last step; forward(ids (B, T)) -> (B, 5).
"""
import torch.nn as nn


class SeqModel(nn.Module):

    def __init__(self, vocab=20, embed=8, hidden=12, classes=5):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, ids):
        x = self.embed(ids)
        out, _ = self.lstm(x)  # (B, T, hidden)
        return self.head(out[:, -1])
