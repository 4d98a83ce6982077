"""One widget per module; styles live in ``tui/app.tcss``."""
