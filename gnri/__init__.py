"""Guided Newton-Raphson Inversion (GNRI) and the shared machinery of the inversion benchmark."""
