"""Data: arrays and files, auxiliary variables, standardisation, generators and built-in sets."""
