"""Backends: hardware calibration profiles, noise models and the devices circuits run on."""
