"""Helpers shared by the benchmark drivers (bench/training, bench/cnn)."""
import platform
import subprocess


def cpu_name():
    """The CPU's model name from /proc/cpuinfo (platform.processor() where it has none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def git_commit(root):
    """The short commit of the checkout at root ('' outside git)."""
    try:
        return subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return ""
