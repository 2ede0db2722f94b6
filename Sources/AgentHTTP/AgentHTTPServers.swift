internal import NIOCore
internal import NIOPosix
public import ProxyController
public import RuleCompiler
internal import Synchronization
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

/// The node agent's HTTP servers, as kube-proxy runs them:
///
/// - **healthz** (`healthzBindAddress`, default `0.0.0.0:10256`): `/healthz` and `/livez`, 200
///   while no change has waited longer than 2 × syncPeriod, else 503; `/healthz` is also 503
///   when the Node is not eligible (being deleted, or tainted `ToBeDeletedByClusterAutoscaler`).
/// - **metrics** (`metricsBindAddress`, default `127.0.0.1:10249`): `/metrics`, `/healthz`,
///   `/proxyMode`, and the dumps `/debug/ruleset` and `/debug/last-failure`.
/// - **health-check node ports**: one listener per `healthCheckNodePort` of an
///   `externalTrafficPolicy: Local` Service, which cloud load balancers probe.
///
/// Replies read `AgentStatus` and `Metrics` when asked, never waiting for the sync loop.
public actor AgentHTTPServers {
    public nonisolated let status: AgentStatus
    public nonisolated let metrics: Metrics
    /// kube-proxy's healthTimeout: 2 × syncPeriod.
    public nonisolated let healthTimeout: Duration

    private nonisolated let nodeEligible: @Sendable () -> Bool
    private nonisolated let healthCheckAddresses: [String]
    private nonisolated let checks = HealthCheckTable()
    private nonisolated let clock: @Sendable () -> Now
    private nonisolated let group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton

    private var healthzListener: HTTPListener?
    private var metricsListener: HTTPListener?
    private var healthCheckListeners: [UInt16: [HTTPListener]] = [:]
    private var isShutDown = false
    private var lastUpdate: Task<[AgentHTTPError], Never>?

    /// - Parameters:
    ///   - syncPeriod: the sync loop's period; a change pending longer than twice this makes the
    ///     agent unhealthy.
    ///   - healthCheckAddresses: the IPs health-check node ports listen on (kube-proxy: each
    ///     `--nodeport-addresses` IP of the node); empty means every IPv4 address.
    ///   - nodeEligible: whether the Node exists, has no deletionTimestamp and no
    ///     `ToBeDeletedByClusterAutoscaler` taint. Called on each `/healthz` request, on a network
    ///     thread: it must answer at once (read a cached value).
    public init(status: AgentStatus, metrics: Metrics, syncPeriod: Duration, healthCheckAddresses: [String] = ["0.0.0.0"],
                nodeEligible: @escaping @Sendable () -> Bool = { true }) {
        self.init(status: status, metrics: metrics, syncPeriod: syncPeriod, healthCheckAddresses: healthCheckAddresses,
                  nodeEligible: nodeEligible, clock: Now.system)
    }

    init(status: AgentStatus, metrics: Metrics, syncPeriod: Duration, healthCheckAddresses: [String],
         nodeEligible: @escaping @Sendable () -> Bool, clock: @escaping @Sendable () -> Now) {
        self.status = status
        self.metrics = metrics
        self.healthTimeout = syncPeriod * 2
        self.healthCheckAddresses = healthCheckAddresses.isEmpty ? ["0.0.0.0"] : healthCheckAddresses
        self.nodeEligible = nodeEligible
        self.clock = clock
    }

    // MARK: - healthz and metrics servers

    /// Starts the servers whose address is given (`nil` leaves one off). On an error, servers
    /// already started keep running: the caller decides whether that is fatal
    /// (kube-proxy's `bindAddressHardFail`) and calls `shutdown()`.
    public func start(healthz: BindAddress?, metrics: BindAddress?) async throws(AgentHTTPError) {
        if let healthz { try await serveHealthz(on: healthz) }
        if let metrics { try await serveMetrics(on: metrics) }
    }

    /// Serves `/healthz` and `/livez` on `address`, replacing an earlier healthz listener.
    /// Returns the bound port (the kernel's choice when `address.port` is 0).
    @discardableResult
    public func serveHealthz(on address: BindAddress) async throws(AgentHTTPError) -> Int {
        await healthzListener?.close()
        healthzListener = nil
        let (status, timeout, clock, nodeEligible) = (status, healthTimeout, clock, nodeEligible)
        let listener = try await HTTPListener.bind(address, server: "healthz", group: group) { request in
            let livez: Bool
            switch request.path {
            case "/healthz": livez = false
            case "/livez": livez = true
            default: return .notFound
            }
            let now = clock()
            return HealthReplies.health(snapshot: status.current,
                                        proxyHealthy: status.isHealthy(timeout: timeout, now: now.instant),
                                        nodeEligible: livez ? nil : nodeEligible(), now: now)
        }
        try await refuseIfShutDown(listener)
        healthzListener = listener
        return listener.boundPort
    }

    /// Serves `/metrics` and the debug dumps on `address`, replacing an earlier metrics listener.
    /// Returns the bound port.
    @discardableResult
    public func serveMetrics(on address: BindAddress) async throws(AgentHTTPError) -> Int {
        await metricsListener?.close()
        metricsListener = nil
        let (status, metrics) = (status, metrics)
        let listener = try await HTTPListener.bind(address, server: "metrics", group: group) { request in
            MetricsReplies.reply(path: request.path, metrics: metrics, snapshot: { status.current })
        }
        try await refuseIfShutDown(listener)
        metricsListener = listener
        return listener.boundPort
    }

    /// The port the healthz server listens on, if it runs.
    public var healthzPort: Int? { healthzListener?.boundPort }
    /// The port the metrics server listens on, if it runs.
    public var metricsPort: Int? { metricsListener?.boundPort }

    // MARK: - Health-check node ports

    /// Makes the listeners match `healthChecks` (what the last successful sync compiled): one
    /// per distinct node port, opened if new, closed if gone, left alone (with its counts
    /// updated) otherwise. A port that cannot be opened is reported and tried again on the next
    /// update; the others are served. Updates run one at a time, in the order they were called.
    @discardableResult
    public func update(healthChecks: [HealthCheck]) async -> [AgentHTTPError] {
        await serialized { await $0.reconcile(healthChecks) }
    }

    /// `update(healthChecks:)` with `status.current.healthChecks`, read when this update's turn
    /// comes: calls made in any order (say, one task per sync) still end on the latest counts.
    @discardableResult
    public func updateFromStatus() async -> [AgentHTTPError] {
        await serialized { await $0.reconcile($0.status.current.healthChecks) }
    }

    private func serialized(_ body: @escaping @Sendable (isolated AgentHTTPServers) async -> [AgentHTTPError]) async
        -> [AgentHTTPError] {
        let previous = lastUpdate
        let update = Task {
            _ = await previous?.value
            return await body(self)
        }
        lastUpdate = update
        return await update.value
    }

    private func reconcile(_ healthChecks: [HealthCheck]) async -> [AgentHTTPError] {
        guard !isShutDown else { return [] }
        var wanted: [UInt16: HealthCheck] = [:]
        // Node ports are unique per cluster; should two services claim one, the first by name serves it.
        for check in healthChecks.sorted(by: { $0.service < $1.service }) where check.nodePort != 0 {
            if wanted[check.nodePort] == nil { wanted[check.nodePort] = check }
        }
        checks.replace(with: wanted)

        let gone = healthCheckListeners.filter { wanted[$0.key] == nil }
        for port in gone.keys { healthCheckListeners[port] = nil }
        await close(gone.values.flatMap { $0 })

        var errors: [AgentHTTPError] = []
        for (port, check) in wanted.sorted(by: { $0.key < $1.key }) where healthCheckListeners[port] == nil && !isShutDown {
            do {
                let listeners = try await openHealthCheck(port: port, service: check.service.description)
                if isShutDown {
                    await close(listeners)  // shutdown() ran while this port was being opened
                } else {
                    healthCheckListeners[port] = listeners
                }
            } catch {
                errors.append(error)
            }
        }
        return errors
    }

    /// The health-check node ports with an open listener.
    public var healthCheckPorts: [UInt16] { healthCheckListeners.keys.sorted() }

    private func openHealthCheck(port: UInt16, service: String) async throws(AgentHTTPError) -> [HTTPListener] {
        let (status, timeout, checks) = (status, healthTimeout, checks)
        var listeners: [HTTPListener] = []
        for host in healthCheckAddresses {
            do {
                let listener = try await HTTPListener.bind(BindAddress(host: host, port: Int(port)),
                                                           server: "the health check of \(service)", group: group) { _ in
                    guard let check = checks[port] else { return .text(503, "no service has this health check port\n") }
                    return HealthReplies.serviceHealth(check, proxyHealthy: status.isHealthy(timeout: timeout))
                }
                listeners.append(listener)
            } catch {
                // All or nothing per port, so a later update can try the port again.
                await close(listeners)
                throw error
            }
        }
        return listeners
    }

    // MARK: - Shutdown

    /// Stops accepting on every listener, lets requests in progress finish, and closes all
    /// connections. Later calls to `update` and the `serve` methods do nothing.
    public func shutdown() async {
        isShutDown = true
        var all = healthCheckListeners.values.flatMap { $0 }
        all += [healthzListener, metricsListener].compactMap { $0 }
        healthCheckListeners = [:]
        healthzListener = nil
        metricsListener = nil
        await close(all)
    }

    private func close(_ listeners: [HTTPListener]) async {
        await withTaskGroup(of: Void.self) { group in
            for listener in listeners { group.addTask { await listener.close() } }
        }
    }

    /// Closes a listener bound after (or while) shutdown began.
    private func refuseIfShutDown(_ listener: HTTPListener) async throws(AgentHTTPError) {
        guard isShutDown else { return }
        await listener.close()
        throw .bindFailed(server: "nftproxy", address: listener.address.description, reason: "the servers are shutting down")
    }
}

/// The health-check node ports' counts, read by the listeners on each request.
final class HealthCheckTable: Sendable {
    private let table = Mutex<[UInt16: HealthCheck]>([:])

    func replace(with checks: [UInt16: HealthCheck]) { table.withLock { $0 = checks } }

    subscript(port: UInt16) -> HealthCheck? { table.withLock { $0[port] } }
}

extension Now {
    /// Both clocks, read now.
    @Sendable static func system() -> Now {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Now(instant: .now, wall: .seconds(Int64(spec.tv_sec)) + .nanoseconds(Int64(spec.tv_nsec)))
    }
}
