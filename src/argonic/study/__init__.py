"""The SONIC scaling study."""
