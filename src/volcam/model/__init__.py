"""Model cards: card → allow-listed network, invertible preprocessing, the per-scan session."""
