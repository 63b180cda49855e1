import sys

try:  # Ctrl-C while the command is still importing (a launcher's children start together) is no traceback
    from . import main
except KeyboardInterrupt:
    print("salun: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
