"""The Textual dashboard (``glusterctl tui``): a REST and event-stream client like any other."""
