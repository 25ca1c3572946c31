"""The EmTrackMichelId CNN: PyTorch definition, training, export, evaluation."""
