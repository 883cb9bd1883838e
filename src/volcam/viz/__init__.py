"""Arrays → pictures: the viewer's orientation, montages, per-slice review numbers."""
