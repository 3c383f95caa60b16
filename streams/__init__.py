"""The stream processor: consume, validate, window, summarise, merge, judge, write (``driftline.streams``)."""
