"""An S3-compatible test server (moto) on 127.0.0.1, one request at a time.

moto checks a conditional write's precondition and then stores the object without a lock,
and `moto_server` serves requests on many threads: two racing conditional writes could
both win. Served one at a time, each check and its write are one step, as on S3.
Usage: python3 .ci/moto_server.py PORT
"""

import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, run_simple

# One request at a time means every other client waits in the listen queue, and werkzeug's
# is 128 connections deep: beyond it the kernel drops the connection attempt and the
# client's TCP retries after 1, 3, 7, 15, 31 s... Two workers and a test's own reads keep
# more than 128 requests waiting at times, and a heartbeat stuck in those retries outlived
# a five-minute lease. The kernel caps the depth at net.core.somaxconn (4096).
BaseWSGIServer.request_queue_size = 4096

run_simple(
    "127.0.0.1",
    int(sys.argv[1]),
    DomainDispatcherApplication(create_backend_app),
    threaded=False,
)
