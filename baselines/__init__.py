"""Inverters compared against GNRI; every module exposes ``invert`` with the shared signature."""
