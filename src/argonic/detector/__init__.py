"""Detector description and event simulation."""
