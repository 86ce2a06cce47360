# gunicorn.conf.py: the Glance API under gunicorn, as sheepfast measures and
# recommends it. Start it with
#
#   OS_GLANCE_CONFIG_DIR=/etc/glance gunicorn -c gunicorn.conf.py glance.wsgi.api:application
#
# Settings given on the command line override these. tests/test_glance_load.py
# and `python -m benchmarks glance` start Glance from this file (changing only
# the address, workers and threads), so it is known to work; the figures
# behind each choice are in benchmarks/README.md, "Through the real Glance
# API, under load".

import os

# Loopback only: glance-api.conf beside this file has no authentication.
# With Keystone configured, bind the API host's address (--bind HOST:9292).
bind = "127.0.0.1:9292"

# Threads, not processes or greenlets: an image transfer holds its thread for
# the whole upload or download, and sheepfast's driver releases the GIL while
# it talks to the cluster and while it hashes (it reads, writes and hashes on
# threads of its own), so a few threads per process keep the cores busy.
worker_class = "gthread"

# One process per core this process may use (affinity, not the host's count).
workers = len(os.sched_getaffinity(0))

# Every concurrent transfer needs a thread of its own: workers x threads must
# be at least the transfers you expect at once, or the rest wait for a thread
# (their time to first byte becomes the time another transfer takes). An
# upload holds two sheepdog_store_chunk_size chunks (64 MiB at the default
# 32) while it runs, a download three pieces of at most 8 MiB.
threads = 8

# The master kills a worker that has not checked in for this long. A gthread
# worker checks in about once a second while its threads transfer, so this
# only catches a stuck worker; it need not cover a whole transfer.
timeout = 120

# On a reload or stop, transfers in flight get this long before their worker
# is killed (and the client sees the upload or download cut): a 4 GiB image
# at 50 MiB/s takes about 80 s.
graceful_timeout = 120

# Idle keep-alive connections cost a thread each only while a request is
# being read; a short wait keeps them from pinning threads.
keepalive = 5
