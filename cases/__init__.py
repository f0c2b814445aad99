"""The built-in case library. Each module listed in MODULES defines a list CASES.

Cases here import frameworks only inside their native functions, so listing and planning
(in the parent process) never import a framework.
"""
MODULES = ("seed", "basic", "ops_elementwise", "ops_activation", "ops_reduce", "ops_shape", "ops_linalg",
           "ops_nn", "models_dense", "models_cnn", "models_rnn", "models_attention", "models_porting", "timing_models")
