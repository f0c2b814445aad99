"""Stage 1, defining what to check: finding cases (built-in library, users' files), the neutral ops vocabulary, seeding."""
