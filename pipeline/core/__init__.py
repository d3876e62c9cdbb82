"""Layer 0: errors, atomic I/O, progress bars, versions. Imports nothing of ragpipe."""
