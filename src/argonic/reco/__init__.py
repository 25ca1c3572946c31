"""Reconstruction: hit finding, PointIdAlg patches, the EmTrackMichelId module and the chain."""
