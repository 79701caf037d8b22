# Importing any model module registers our own families with transformers' Auto classes, so every loader
# (AutoModelFor*.from_pretrained, pipeline(), our own) opens a saved custom transformer or BiLSTM like any HF model.
from compress.models import bilstm, custom  # noqa: F401
