"""The Flower deployment runtime (``pip install 'fedtreelora[flower]'``): docs/DEPLOY.md.

``serverapp`` and ``clientapp`` are the Flower apps; ``deploy`` starts a local federation of processes.
Only this package imports Flower: the algorithm core and the embedded runtime never do.
"""
