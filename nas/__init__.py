"""The NAS engine: strategies, objectives, the search loop and its runners, finishing
passes, export and the command line (layer 4; imports every layer below it)."""
__version__ = "0.1.0"
