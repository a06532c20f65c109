"""What mapping the data's own ids to table rows costs, at the notebook's scale.

Makes the synthetic plays (`data.make_planted` at --scale; 1.0 is 17.3M plays) and writes them
twice as lastfm_play.csv: once with the notebook's dense integer ids (read as rows directly) and
once with string ids shaped like the 360K files' (a 40-character hex user hash, a 36-character
artist MBID), which `data.load_folder` maps to rows. Then it reads each folder --repeats times
without the cache and prints the median seconds and peak memory of each, and their ratio.

    python bench/id_mapping.py --scale=1.0 --folder=out/ids
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def options(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="synthetic data size; 1.0 = 17.3M plays (default 1.0)")
    parser.add_argument("--folder", required=True,
                        help="where the two CSV folders are written (about 2 GB at scale 1.0)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed reads of each folder; the median is printed (default 3)")
    parser.add_argument("--read", default="",
                        help="internal: time one read of this folder and print seconds and MB")
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 10 or args.repeats < 1:
        parser.error("--scale must be in (0, 10] and --repeats at least 1")
    return args


def write_folders(scale, folder):
    """The same plays with numeric and with string ids -> the two folders."""
    import numpy as np
    import data
    sizes = [max(2, round(n * scale)) for n in (358_868, 160_112, 17_302_623)]
    plays, artists, _ = data.make_planted(*sizes, seed=0)
    numeric, textual = os.path.join(folder, "numeric"), os.path.join(folder, "strings")
    for path in (numeric, textual):
        os.makedirs(path, exist_ok=True)
    plays.to_csv(os.path.join(numeric, data.PLAY_FILE), index=False)
    artists.to_csv(os.path.join(numeric, data.ARTIST_FILE), index=False)
    user_hash = np.array([f"{i * 2654435761 % 2**160:040x}" for i in range(sizes[0])])
    artist_mbid = np.array([f"{i:08x}-0000-4000-8000-{i * 40503 % 2**48:012x}"
                            for i in range(sizes[1])])
    textual_plays = plays.assign(user_id=user_hash[plays["user_id"]],
                                 artist_id=artist_mbid[plays["artist_id"]])
    textual_plays.to_csv(os.path.join(textual, data.PLAY_FILE), index=False)
    artists.assign(artist_id=artist_mbid[artists["artist_id"]]).to_csv(
        os.path.join(textual, data.ARTIST_FILE), index=False)
    return numeric, textual


def read_once(folder):
    """One uncached read, in this process: seconds and peak resident MB."""
    import data
    started = time.perf_counter()
    plays = data.load_folder(folder, use_cache=False)
    seconds = time.perf_counter() - started
    with open("/proc/self/status") as stream:   # VmHWM: this process's own peak, since exec
        peak = next(int(line.split()[1]) for line in stream if line.startswith("VmHWM")) / 1024
    print(f"{seconds:.3f} {peak:.0f} {len(plays.user_ids)}")


def timed(folder, repeats):
    """Each read in a fresh process, so the peak memory is the read's alone."""
    runs = []
    for _ in range(repeats):
        shown = subprocess.run([sys.executable, __file__, "--folder", folder, "--read", folder],
                               capture_output=True, text=True, check=True).stdout.split()
        runs.append((float(shown[0]), float(shown[1]), int(shown[2])))
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs), runs[0][2]


def main(argv=None):
    args = options(argv)
    if args.read:
        read_once(args.read)
        return 0
    numeric, textual = write_folders(args.scale, args.folder)
    rows = [("numeric ids (rows as they are)", *timed(numeric, args.repeats)),
            ("string ids (mapped to rows)", *timed(textual, args.repeats))]
    print(f"{'ids':32s} {'median s':>9s} {'peak MB':>8s} {'pairs':>12s}")
    for name, seconds, peak, pairs in rows:
        print(f"{name:32s} {seconds:9.2f} {peak:8.0f} {pairs:12,d}")
    print(f"mapping costs {rows[1][1] / rows[0][1]:.2f}x the numeric read's time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
