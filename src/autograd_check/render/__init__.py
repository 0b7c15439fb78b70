"""Rich views: the one stderr console and its messages, results, reports, the tour, progress."""
