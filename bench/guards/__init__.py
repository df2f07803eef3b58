"""``python -m bench.guards``: what guard policies cost per stage and per gateway request, and
how well their detectors do, side by side with a floor and open-source peers."""
