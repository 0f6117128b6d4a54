/**
 * Alerts POSTed to an HTTP endpoint as JSON arrays: batched, retried with
 * exponential backoff, never blocking the event path (push only queues).
 * The queue is bounded; whatever is lost (queue full, retries exhausted) is
 * counted through `onLoss`.
 */
export interface WebhookOptions {
  url: string;
  batchSize: number;
  flushIntervalMs: number;
  maxQueue: number;
  maxRetries: number;
  /** First backoff; doubles per failed try, up to 30 s. */
  backoffMs: number;
  timeoutMs: number;
}

export class Webhook {
  private queue: object[] = [];
  private timer: NodeJS.Timeout | undefined;
  private sending = false;
  private stopped = false;
  sent = 0;
  retries = 0;

  constructor(
    private readonly opts: WebhookOptions,
    private readonly onLoss: (reason: 'webhook_queue_full' | 'webhook_failed', n: number) => void,
    private readonly onRetry: () => void = () => {},
  ) {}

  push(obj: object): void {
    if (this.queue.length >= this.opts.maxQueue) {
      this.onLoss('webhook_queue_full', 1);
      return;
    }
    this.queue.push(obj);
    if (this.queue.length >= this.opts.batchSize) this.kick(0);
    else this.kick(this.opts.flushIntervalMs);
  }

  private kick(delayMs: number): void {
    if (this.sending || this.stopped) return;
    if (this.timer && delayMs > 0) return; // a flush is already due
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, delayMs);
    this.timer.unref();
  }

  private async flush(): Promise<void> {
    if (this.sending || this.queue.length === 0) return;
    this.sending = true;
    const batch = this.queue.slice(0, this.opts.batchSize);
    let delay = this.opts.backoffMs;
    for (let attempt = 0; ; attempt++) {
      if (await this.post(batch)) {
        this.queue.splice(0, batch.length);
        this.sent += batch.length;
        break;
      }
      if (attempt >= this.opts.maxRetries || this.stopped) {
        this.queue.splice(0, batch.length);
        this.onLoss('webhook_failed', batch.length);
        break;
      }
      this.retries++;
      this.onRetry();
      await new Promise((r) => setTimeout(r, delay).unref());
      delay = Math.min(delay * 2, 30_000);
    }
    this.sending = false;
    if (this.queue.length) this.kick(this.queue.length >= this.opts.batchSize ? 0 : this.opts.flushIntervalMs);
  }

  private async post(batch: object[]): Promise<boolean> {
    try {
      const r = await fetch(this.opts.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(batch),
        signal: AbortSignal.timeout(this.opts.timeoutMs),
      });
      await r.arrayBuffer().catch(() => undefined);
      return r.ok;
    } catch {
      return false;
    }
  }

  /** Sends what is queued (one try per batch), then stops. */
  async close(): Promise<void> {
    clearTimeout(this.timer);
    while (this.queue.length && !this.sending) {
      const batch = this.queue.splice(0, this.opts.batchSize);
      if (await this.post(batch)) this.sent += batch.length;
      else this.onLoss('webhook_failed', batch.length);
    }
    this.stopped = true;
  }
}
