import sys

from mmrpt.cli import main

sys.exit(main())
