"""Rich views: the one stderr console and its messages, the app's --help, results, a Slurm
job's views, reports, the tour, progress."""
