"""A map and its geometry, independent of how it was made: results, resampling, filters, windows, colours."""
