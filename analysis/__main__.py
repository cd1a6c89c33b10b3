"""``python -m analysis RUN_DIR``: the per-area table of a run, and its figures;
``python -m analysis extract|predict ...``: a run on any video files (:mod:`analysis.cli`);
``python -m analysis neural ...``: areas against neural recordings (:mod:`analysis.neural`);
``python -m analysis compare RUN_A RUN_B``: two analysed runs side by side (:mod:`analysis.compare`)."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "neural":
    from analysis.neural import main as neural_main

    sys.exit(neural_main(sys.argv[2:]))
if len(sys.argv) > 1 and sys.argv[1] == "compare":
    from analysis.compare import main as compare_main

    sys.exit(compare_main(sys.argv[2:]))
if len(sys.argv) > 1 and sys.argv[1] in ("extract", "predict"):
    from analysis.cli import main as cli_main

    sys.exit(cli_main(sys.argv[1:]))

from analysis.report import main  # noqa: E402

sys.exit(main())
