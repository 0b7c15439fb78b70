"""Sweeps: the grid of cases, the results store, the plan, starting and running it (resume, lock,
supersede, the manifest's bookkeeping), and the report data. Nothing here prints or exits.

Modules, each importing only those above it:

- grid.py      axes of values expanded into keyed cases (no torch)
- store.py     DIR: one atomic record per case, the manifest, the lock
- settings.py  flags over the [check] and [sweep] tables of --config
- runner.py    running cases (here, or as the body of a Slurm array task)
- claim.py     DIR/.running: the one process that runs (or submits) a sweep into DIR
- plan.py      the plan (grid, cases, mode, store, Slurm options) and its --dry-run preview
- earlier.py   an earlier submission into DIR: refused while it runs (cancelled with --force),
               tidied when killed, resumed from (records not credited are superseded)
- launch.py    starting it: lock, claim, bookkeeping, submitting; running it here or watching
               its arrays, with callbacks for progress
- report.py    the report, from the store (and Slurm's states of the tasks that owe records)
"""
