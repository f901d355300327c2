"""CPU time of a process tree, read from /proc: shared by the rig's driver and its peer scripts
(bench/peers/), which measure the server the same way."""

import os

CLK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root):
    """utime + stime of a process and its descendants, in seconds."""
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                stats[int(d)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK)
            except (OSError, IndexError, ValueError):
                pass
    tree, total, i = [root], 0.0, 0
    while i < len(tree):
        total += stats.get(tree[i], (0, 0.0))[1]
        tree.extend(p for p, (pp, _) in stats.items() if pp == tree[i])
        i += 1
    return total
