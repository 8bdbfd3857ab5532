import CoreMetrics
import Metrics
import Prometheus
import Synchronization

/// A swift-metrics factory over one Prometheus registry that gives every family its help line
/// and buckets from ``MetricsCatalog`` (Prometheus's own factory leaves help empty, and
/// `promtool check metrics` refuses a family without one).
public struct CatalogPrometheusFactory: MetricsFactory {
    /// Where the metrics are kept; `emit` renders them.
    public let registry: PrometheusCollectorRegistry

    /// A factory over `registry`.
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) { self.registry = registry }

    static func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: MetricsCatalog.help(label))
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: Self.descriptor(label), labels: dimensions)
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: Self.descriptor(label), labels: dimensions)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: Self.descriptor(label), labels: dimensions) }
        let buckets = MetricsCatalog.families[label]?.buckets.map { $0.map(\.seconds) } ?? [0.001, 0.01, 0.1, 1, 10, 100, 1000]
        return registry.makeValueHistogram(descriptor: Self.descriptor(label), labels: dimensions, buckets: buckets)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: Self.descriptor(label), labels: dimensions)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        let buckets = MetricsCatalog.families[label]?.buckets ?? MetricsCatalog.slow
        return registry.makeDurationHistogram(descriptor: Self.descriptor(label), labels: dimensions, buckets: buckets)
    }

    public func destroyCounter(_ handler: any CounterHandler) {
        if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
    }

    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
    }

    public func destroyRecorder(_ handler: any RecorderHandler) {
        if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) }
        if let h = handler as? ValueHistogram { registry.unregisterValueHistogram(h) }
    }

    public func destroyMeter(_ handler: any MeterHandler) {
        if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) }
    }

    public func destroyTimer(_ handler: any TimerHandler) {
        if let h = handler as? DurationHistogram { registry.unregisterDurationHistogram(h) }
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// The daemon's metrics: swift-metrics handles over one Prometheus registry, and the counters the
/// libraries keep themselves (gossip, DNS, the datapath, ESP) mirrored into it when scraped.
public final class DaemonMetrics: Sendable {
    /// The factory every handle is made with (also given to the embedded DNS server).
    public let factory: CatalogPrometheusFactory
    private struct SeriesKey: Hashable {
        var name: String
        var labels: [String]
    }
    private struct Mirror {
        var counters: [SeriesKey: (counter: Metrics.Counter, last: Int64)] = [:]
        var gauges: [SeriesKey: Metrics.Gauge] = [:]
        var timers: [SeriesKey: Metrics.Timer] = [:]
        var events: [SeriesKey: Metrics.Counter] = [:]
    }
    private let mirror = Mutex(Mirror())

    /// Metrics over a registry of their own.
    public init() {
        factory = CatalogPrometheusFactory()
        gauge("overlay_build_info", ["version": OverlayVersion.version], 1)
    }

    /// A timer (a histogram of durations) for `name` with `labels`.
    public func timer(_ name: String, _ labels: KeyValuePairs<String, String> = [:]) -> Metrics.Timer {
        Metrics.Timer(label: name, dimensions: labels.map { ($0.key, $0.value) }, factory: factory)
    }

    /// Records `duration` in the timer `name` (no labels).
    public func record(_ name: String, _ duration: Duration) { record(name, [:], duration) }

    /// A counter's series without labels takes the running total `value` (see the labelled one).
    public func total(_ name: String, _ value: some BinaryInteger) { total(name, [:], value) }

    /// A gauge without labels takes `value`.
    public func gauge(_ name: String, _ value: some BinaryInteger) { gauge(name, [:], value) }

    /// Records `duration` in the timer `name` with `labels` (made on first use).
    public func record(_ name: String, _ labels: KeyValuePairs<String, String>, _ duration: Duration) {
        let key = SeriesKey(name: name, labels: labels.flatMap { [$0.key, $0.value] })
        let t = mirror.withLock { m in
            if let t = m.timers[key] { return t }
            let t = timer(name, labels)
            m.timers[key] = t
            return t
        }
        t.record(duration: duration)
    }

    /// Adds one to the counter `name` with `labels` (made on first use).
    public func increment(_ name: String, _ labels: KeyValuePairs<String, String> = [:]) {
        let key = SeriesKey(name: name, labels: labels.flatMap { [$0.key, $0.value] })
        let c = mirror.withLock { m in
            if let c = m.events[key] { return c }
            let c = Metrics.Counter(label: name, dimensions: labels.map { ($0.key, $0.value) }, factory: factory)
            m.events[key] = c
            return c
        }
        c.increment()
    }

    /// A counter's series takes the library's running total `value`: it moves by what the total
    /// moved since the last call. A total that went down (its counter was made anew, a new swarm
    /// membership) counts from zero again.
    public func total(_ name: String, _ labels: KeyValuePairs<String, String>, _ value: some BinaryInteger) {
        let key = SeriesKey(name: name, labels: labels.flatMap { [$0.key, $0.value] })
        let now = Int64(clamping: value)
        mirror.withLock { m in
            let entry = m.counters[key] ?? (Metrics.Counter(label: name, dimensions: labels.map { ($0.key, $0.value) }, factory: factory), 0)
            let delta = now >= entry.last ? now - entry.last : now
            if delta > 0 { entry.counter.increment(by: delta) }
            m.counters[key] = (entry.counter, now)
        }
    }

    /// A gauge's series takes `value`.
    public func gauge(_ name: String, _ labels: KeyValuePairs<String, String>, _ value: some BinaryInteger) {
        let key = SeriesKey(name: name, labels: labels.flatMap { [$0.key, $0.value] })
        mirror.withLock { m in
            let g = m.gauges[key] ?? Metrics.Gauge(label: name, dimensions: labels.map { ($0.key, $0.value) }, factory: factory)
            m.gauges[key] = g
            g.record(Int64(clamping: value))
        }
    }

    /// Mirrors with `refresh`, then renders every series in Prometheus's text format (0.0.4).
    public func scrape(_ refresh: () async -> Void) async -> [UInt8] {
        await refresh()
        return factory.registry.emitToBuffer()
    }
}

extension String {
    /// `camelCase` as `snake_case`, for label values made from Swift names (`espUnknownSPI`:
    /// `esp_unknown_spi`, `nonESPMarker`: `non_esp_marker`).
    var snakeCased: String {
        let chars = Array(self)
        var out = ""
        for (i, c) in chars.enumerated() {
            if c.isUppercase, i > 0 {
                let prev = chars[i - 1], next = i + 1 < chars.count ? chars[i + 1] : nil
                if prev.isLowercase || prev.isNumber || (prev.isUppercase && next?.isLowercase == true) { out.append("_") }
            }
            out.append(contentsOf: c.lowercased())
        }
        return out
    }
}
