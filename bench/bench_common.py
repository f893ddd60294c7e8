"""Helpers shared by the benchmark drivers (bench/training, bench/cnn)."""
import platform


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
