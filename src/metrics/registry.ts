import client from 'prom-client';

export type Labels = Record<string, string>;

/** What prom-client's registry reads from a metric when it renders one. */
export interface MetricSnapshot {
  name: string;
  help: string;
  type: string;
  values: Array<{ labels: Record<string, string | number>; value: number; metricName?: string }>;
  aggregator?: string;
}

export interface MetricLike {
  name: string;
  help: string;
  type: string;
  get(): Promise<MetricSnapshot> | MetricSnapshot;
}

/**
 * One prom-client registry for every metric, rendered as Prometheus text or
 * OpenMetrics on demand. prom-client ties the format to a registry and
 * renames counters in place when it renders OpenMetrics, so the OpenMetrics
 * view wraps each metric instead of sharing it.
 */
export class MetricsRegistry {
  readonly registry = new client.Registry();
  private readonly beforeScrape: Array<() => void> = [];

  counter(name: string, help: string, labelNames: readonly string[] = []): client.Counter<string> {
    return new client.Counter({ name, help, labelNames, registers: [this.registry] });
  }

  gauge(name: string, help: string, labelNames: readonly string[] = []): client.Gauge<string> {
    return new client.Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  register(metric: MetricLike): void {
    this.registry.registerMetric(metric as unknown as client.Metric<string>);
  }

  /** Hooks run before each scrape: collectors fold kernel maps into metrics. */
  onScrape(fn: () => void): void {
    this.beforeScrape.push(fn);
  }

  collect(): void {
    for (const fn of this.beforeScrape) fn();
  }

  async render(openMetrics: boolean): Promise<{ body: string; contentType: string }> {
    this.collect();
    if (!openMetrics) {
      return { body: await this.registry.metrics(), contentType: this.registry.contentType };
    }
    const om = new client.Registry();
    om.setContentType(client.Registry.OPENMETRICS_CONTENT_TYPE as never);
    for (const m of this.registry.getMetricsAsArray() as unknown as MetricLike[]) {
      const isCounter = m.type === 'counter';
      const name = isCounter ? m.name.replace(/_total$/, '') : m.name;
      om.registerMetric({
        name,
        help: m.help,
        type: m.type,
        get: async () => ({ ...(await m.get()), name }),
      } as unknown as client.Metric<string>);
    }
    return { body: await om.metrics(), contentType: om.contentType };
  }
}

/** Chooses OpenMetrics when the scraper asks for it, as Prometheus does. */
export function wantsOpenMetrics(accept: string | undefined): boolean {
  return !!accept && accept.includes('application/openmetrics-text');
}
