"""
The guest tests (guest_tests/) run inside the UML kernel only, started there by
tests/test_kernel_gpio.py; the host's pytest leaves them alone. init.sh sets
RPISENSOR_UML_GUEST=1 in the guest.
"""

import os

collect_ignore = [] if os.environ.get("RPISENSOR_UML_GUEST") == "1" else ["guest_tests"]
