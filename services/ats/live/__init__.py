"""The live loop: the replay engine's one decision path driven on the venue's clock, with the venue's candles and
a venue (or paper) broker; reconciliation against the venue and the read-only go-live preflight."""
