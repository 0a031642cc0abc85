"""com.example.HelloWorld: says hello once, then stays up (so the component stays RUNNING),
printing a line every 60 seconds. Standard library only."""
import signal
import sys
import time


def main() -> int:
    message = sys.argv[1] if len(sys.argv) > 1 else "world"
    print(f"Hello, {message}!", flush=True)
    # SIGTERM (canopyd stopping the component) ends the loop with a goodbye line.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    started = time.monotonic()
    try:
        while True:
            time.sleep(60)
            print(f"Still here after {int(time.monotonic() - started)} s.", flush=True)
    except SystemExit:
        print("Goodbye.", flush=True)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
