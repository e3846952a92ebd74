"""An S3-compatible test server (moto) on 127.0.0.1, one request at a time.

moto checks a conditional write's precondition and then stores the object without a lock,
and `moto_server` serves requests on many threads: two racing conditional writes could
both win. Served one at a time, each check and its write are one step, as on S3.
Usage: python3 .ci/moto_server.py PORT
"""

import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

run_simple(
    "127.0.0.1",
    int(sys.argv[1]),
    DomainDispatcherApplication(create_backend_app),
    threaded=False,
)
