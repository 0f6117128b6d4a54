/**
 * Which processes still live, asked of /proc once per collection round for
 * every collector, and the one place a process gone is forgotten: its
 * cached name goes once every collector has read its kernel entries a last
 * time in that round.
 */
import fs from 'node:fs';

export class Liveness {
  private round = new Map<number, boolean>();
  private readonly onGone: Array<(tgid: number) => void> = [];

  /** `exists` is /proc's answer; tests may give their own. */
  constructor(private readonly exists: (tgid: number) => boolean = (tgid) => fs.existsSync(`/proc/${tgid}`)) {}

  /** Whether `tgid` lives, asked once per round (tgid 0, the kernel's own context, always does). */
  alive(tgid: number): boolean {
    let a = this.round.get(tgid);
    if (a === undefined) {
      a = tgid === 0 || this.exists(tgid);
      this.round.set(tgid, a);
    }
    return a;
  }

  /** A process known to have exited (its exit event): forgotten when this round ends. */
  exited(tgid: number): void {
    this.round.set(tgid, false);
  }

  /** Called with each process found gone, when its round ends. */
  whenGone(fn: (tgid: number) => void): void {
    this.onGone.push(fn);
  }

  /** Ends a round: the processes found gone in it are forgotten, and the next round asks afresh. */
  endRound(): void {
    const round = this.round;
    this.round = new Map();
    for (const [tgid, a] of round) if (!a) for (const fn of this.onGone) fn(tgid);
  }
}
