"""An example gnri-bench plug-in package (see README.md): inverters found through entry points."""
