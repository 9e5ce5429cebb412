// Counters and histograms for the per-request series, kept as plain numbers and turned into prom-client's
// values only when /metrics is scraped. prom-client's `child.inc()` and `child.observe()` validate and hash the
// label set again on every call: 1.5-2 us a request, 5-8 % of a core at the rate hot manifests are asked for.
// A cache answers the same few label sets all day long, so relais resolves each label set to a tally once and
// adds to it with arithmetic. The values these produce are exactly prom-client's (test/unit/ops/tally.test.ts
// renders both through one Registry), so /metrics and the status page read them like any other metric.
import type { Metric, Registry } from 'prom-client';

type Labels<T extends string> = Record<T, string>;

interface ExportedValue {
  value: number;
  labels: Partial<Record<string, string | number>>;
  metricName?: string;
  sharedLabels?: Partial<Record<string, string | number>>;
}

interface Exported {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  values: ExportedValue[];
  aggregator: 'sum';
}

abstract class TallyMetric<T extends string, S> {
  readonly aggregator = 'sum' as const;
  abstract readonly type: 'counter' | 'histogram';
  protected readonly series = new Map<string, { labels: Labels<T>; tally: S }>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly T[],
    registry: Registry,
  ) {
    // prom-client's Registry is typed for its own classes but uses only name, help, type, get(),
    // getForPromString() and reset() of a metric: this class has all of them.
    registry.registerMetric(this as unknown as Metric);
  }

  protected abstract create(): S;

  /** The tally of one label set (made on first use; keep it and add to it). */
  tally(labels: Labels<T>): S {
    const key = this.labelNames.map((n) => labels[n]).join('\0');
    let s = this.series.get(key);
    if (s === undefined) {
      s = { labels: { ...labels }, tally: this.create() };
      this.series.set(key, s);
    }
    return s.tally;
  }

  reset(): void {
    this.series.clear();
  }

  abstract getForPromString(): Promise<Exported>;

  async get(): Promise<Exported> {
    const m = await this.getForPromString();
    // The same shape as prom-client's get(): shared labels folded into each value's labels.
    m.values = m.values.map(({ sharedLabels, ...v }) => ({ ...v, labels: { ...v.labels, ...sharedLabels } }));
    return m;
  }
}

export interface CounterTally {
  value: number;
}

/** A counter (prom-client's `Counter` output) fed through `tally(labels).value += n`. */
export class TallyCounter<T extends string> extends TallyMetric<T, CounterTally> {
  readonly type = 'counter' as const;

  protected create(): CounterTally {
    return { value: 0 };
  }

  getForPromString(): Promise<Exported> {
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      values: [...this.series.values()].map((s) => ({ value: s.tally.value, labels: { ...s.labels } })),
      aggregator: this.aggregator,
    });
  }
}

/** One label set of a TallyHistogram. */
export class HistogramTally {
  /** Observations per bucket (not cumulative); the last one is above the highest bound. */
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > (this.bounds[i] as number)) i++;
    this.counts[i] = (this.counts[i] as number) + 1;
    this.sum += value;
    this.count++;
  }
}

/** A histogram (prom-client's `Histogram` output) fed through `tally(labels).observe(v)`. */
export class TallyHistogram<T extends string> extends TallyMetric<T, HistogramTally> {
  readonly type = 'histogram' as const;

  constructor(
    name: string,
    help: string,
    labelNames: readonly T[],
    private readonly buckets: readonly number[],
    registry: Registry,
  ) {
    super(name, help, labelNames, registry);
  }

  protected create(): HistogramTally {
    return new HistogramTally(this.buckets);
  }

  getForPromString(): Promise<Exported> {
    const values: ExportedValue[] = [];
    for (const { labels, tally } of this.series.values()) {
      let acc = 0;
      this.buckets.forEach((le, i) => {
        acc += tally.counts[i] as number;
        values.push({ labels: { le }, sharedLabels: { ...labels }, value: acc, metricName: `${this.name}_bucket` });
      });
      values.push(
        { labels: { le: '+Inf' }, sharedLabels: { ...labels }, value: tally.count, metricName: `${this.name}_bucket` },
        { labels: {}, sharedLabels: { ...labels }, value: tally.sum, metricName: `${this.name}_sum` },
        { labels: {}, sharedLabels: { ...labels }, value: tally.count, metricName: `${this.name}_count` },
      );
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator });
  }
}
