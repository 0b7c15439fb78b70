"""The base floor: what every other package may use and which uses none of them. Errors and exit
codes, numbers, the one torch import, the JSON document, safety (trust checks), processes, the
spec and the result (plain data, no torch), budget, device, environment, clock, deadline."""
