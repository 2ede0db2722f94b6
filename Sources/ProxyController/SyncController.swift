import Logging
import NftIR
import RuleCompiler
import ServiceModel
import Synchronization

/// Timing of the sync loop (kube-proxy's `minSyncPeriod` and `syncPeriod`, plus how often to
/// look for someone else's changes to our tables).
public struct SyncTiming: Sendable {
    public var minSyncPeriod: Duration
    public var syncPeriod: Duration
    public var driftCheckInterval: Duration

    public init(minSyncPeriod: Duration, syncPeriod: Duration, driftCheckInterval: Duration = .seconds(1)) {
        self.minSyncPeriod = minSyncPeriod
        self.syncPeriod = syncPeriod
        self.driftCheckInterval = driftCheckInterval
    }

    public init(_ config: NodeConfig) {
        self.init(minSyncPeriod: .milliseconds(Int64(config.minSyncPeriod * 1000)),
                  syncPeriod: .milliseconds(Int64(config.syncPeriod * 1000)))
    }
}

/// What the health endpoints and dumps read, without waiting for the sync loop.
public final class AgentStatus: Sendable {
    public struct Snapshot: Sendable {
        /// When rules were last committed (or found already right).
        public var lastUpdated: ContinuousClock.Instant?
        /// The oldest change not yet in the kernel.
        public var pendingSince: ContinuousClock.Instant?
        /// Local ready endpoint counts of eTP=Local services with a health-check node port.
        public var healthChecks: [HealthCheck] = []
        /// What was last committed, as its fragments: the ruleset is listed only when asked for.
        public var applied: RulesetAssembly?
        /// The ruleset last committed.
        public var lastApplied: Ruleset? {
            get { listed ?? applied?.ruleset() }
            set { listed = newValue }
        }
        private var listed: Ruleset?
        /// The rules last applied are being changed in place (a partial sync, or the full sync
        /// that retries a failed one): the kernel still holds them, but there is no copy to show.
        public var changing = false
        /// The last batch the kernel refused, with its error.
        public var lastFailure: (error: BackendError, transaction: Transaction)?
        public var quarantined: [String] = []
    }

    private let snapshot = Mutex(Snapshot())

    public init() {}

    public var current: Snapshot { snapshot.withLock { $0 } }

    func update(_ change: (inout Snapshot) -> Void) { snapshot.withLock { change(&$0) } }

    /// kube-proxy's rule: unhealthy when a change has waited longer than `timeout` (2 × syncPeriod).
    public func isHealthy(timeout: Duration, now: ContinuousClock.Instant = .now) -> Bool {
        guard let pending = current.pendingSince else { return true }
        return now - pending <= timeout
    }
}

/// The node agent's control loop: keeps nftproxy's tables in the kernel equal to what the
/// current objects compile to. Changes are coalesced (at most one sync per `minSyncPeriod`);
/// each sync sends only the difference in one batch; a full sync (read back, diff, prune
/// stale affinity entries) runs at start, every `syncPeriod` and after any failure; a commit by
/// anyone else is noticed through the ruleset generation and our tables are checked and
/// repaired; a service the kernel refuses is left out and retried once per `syncPeriod`.
public actor SyncController {
    public nonisolated let status = AgentStatus()
    public nonisolated let metrics: Metrics

    private let backend: any RulesetBackend
    private let conntrack: (any ConntrackCleaner)?
    private let config: NodeConfig
    private let timing: SyncTiming
    private let logger: Logger

    private var store = ObjectStore()
    private var ready = false
    private var dirty = false
    private var stopped = false
    private var needsFull = true
    private var retryAt: ContinuousClock.Instant?
    private var lastFull: ContinuousClock.Instant?
    private var lastSyncEnd: ContinuousClock.Instant?
    private var nextDriftCheck = ContinuousClock.now
    /// What the kernel holds now, by service: a partial sync replaces a few fragments.
    private var assembly: RulesetAssembly?
    private var lastGeneration: UInt32?
    private var quarantine: [String: ContinuousClock.Instant] = [:]
    /// The drift check has already counted and logged the repair the next full sync makes.
    private var repairReported = false
    private var waiter: CheckedContinuation<Void, Never>?
    private var wakeToken = 0
    /// Called after each successful sync with the batch that was sent (empty: nothing to change).
    private var onSync: (@Sendable (Transaction) -> Void)?

    public init(backend: any RulesetBackend, conntrack: (any ConntrackCleaner)? = nil, config: NodeConfig, timing: SyncTiming,
                metrics: Metrics = Metrics(), logger: Logger = Logger(label: "nftproxy.sync")) {
        self.backend = backend
        self.conntrack = conntrack
        self.config = config
        self.timing = timing
        self.metrics = metrics
        self.logger = logger
    }

    public func onSync(_ callback: @escaping @Sendable (Transaction) -> Void) { onSync = callback }

    // MARK: - Input

    /// Applies a change to the known objects and asks for a sync.
    public func update(_ change: @Sendable (inout ObjectStore) -> Void) {
        change(&store)
        guard !store.changes.isEmpty else { return }
        if status.current.pendingSince == nil { status.update { $0.pendingSince = .now } }
        dirty = true
        wake()
    }

    /// The sources have delivered a complete first list: rules may now be written. Nothing is
    /// written before, so a half-known cluster never replaces working rules.
    public func markReady() {
        ready = true
        wake()
    }

    public func stop() {
        stopped = true
        wake()
    }

    /// The objects known now, as the compiler gets them (read-only: for status dumps and tests).
    public var objects: ClusterState { store.state }

    // MARK: - Loop

    public func run() async {
        while !stopped && !Task.isCancelled {
            let now = ContinuousClock.now
            var deadline = now + timing.driftCheckInterval
            if ready {
                if let retryAt, now < retryAt {
                    deadline = min(deadline, retryAt)
                } else if needsFull || lastFull.map({ now - $0 >= timing.syncPeriod }) ?? true {
                    sync(full: true)
                    continue
                } else if dirty {
                    let earliest = (lastSyncEnd ?? now) + timing.minSyncPeriod
                    if earliest <= now {
                        sync(full: false)
                        continue
                    }
                    deadline = min(deadline, earliest)
                }
                if now >= nextDriftCheck {
                    checkDrift()
                    nextDriftCheck = now + timing.driftCheckInterval
                    continue
                }
                deadline = min(deadline, nextDriftCheck, (lastFull ?? now) + timing.syncPeriod)
            }
            await sleep(until: deadline)
        }
    }

    private func wake() {
        wakeToken += 1
        waiter?.resume()
        waiter = nil
    }

    private func sleep(until deadline: ContinuousClock.Instant) async {
        let token = wakeToken
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            waiter = continuation
            Task { [weak self] in
                try? await Task.sleep(until: deadline, clock: .continuous)
                await self?.timerFired(token)
            }
        }
    }

    private func timerFired(_ token: Int) {
        guard token == wakeToken else { return }
        wake()
    }

    // MARK: - Sync

    private func sync(full: Bool) {
        let started = ContinuousClock.now
        let pendingSince = status.current.pendingSince
        dirty = false
        let changes = store.takeChanges()
        if !full, !changes.everything, assembly != nil {
            partialSync(changes, started: started, pendingSince: pendingSince)
        } else {
            fullSync(started: started, pendingSince: pendingSince)
        }
    }

    /// Compiles everything, reads our tables back and sends the difference (which also repairs
    /// anyone else's edits), pruning stale affinity entries.
    private func fullSync(started: ContinuousClock.Instant, pendingSince: ContinuousClock.Instant?) {
        for (service, until) in quarantine where until <= started {
            quarantine[service] = nil
            logger.info("retrying quarantined service", metadata: ["service": "\(service)"])
        }
        var state = store.state
        state.services.removeAll { quarantine["\($0.namespace)/\($0.name)"] != nil }
        let compilation = RuleCompiler.compile(state, config: config)
        var next = compilation.assembly!
        var transaction = Transaction()
        // The claim index the next partial sync needs is built on the other core meanwhile
        // (1.5 s at 100k services, which the first change after a full sync used to wait for).
        let (outcome, prepared) = inParallel(if: hasSeveralCPUs, { () -> BackendError? in
            do throws(BackendError) {
                try writeFull(compilation, next: next, transaction: &transaction)
                return nil
            } catch {
                return error
            }
        }, and: { () -> RulesetAssembly in
            var prepared = next
            prepared.prepare()
            return prepared
        })
        if let outcome {
            failed(outcome, transaction: transaction, full: true)
            return
        }
        next = prepared
        let previous = assembly.map { Array($0.fragments.values) }
        assembly = next
        let finished = ContinuousClock.now
        lastFull = finished
        succeeded(transaction, full: true, started: started, finished: finished, pendingSince: pendingSince)
        cleanConntrack(previous: previous?.flatMap(\.udpPorts), current: compilation.udpPorts)
    }

    /// A full sync's kernel part: reads our tables back, computes `transaction` (the difference,
    /// with stale affinity entries pruned, or the tables replaced whole when they cannot be read)
    /// and applies it. `transaction` holds what was computed also when this throws.
    private func writeFull(_ compilation: Compilation, next: RulesetAssembly, transaction: inout Transaction) throws(BackendError) {
        var current: Ruleset
        var replace = false
        do {
            current = try backend.readOurs()
        } catch {
            // Our tables hold something we never write: replace them whole, in the same batch.
            logger.warning("cannot read nftproxy's tables back; replacing them", metadata: ["error": "\(error)"])
            current = Ruleset()
            replace = true
        }
        transaction = Transaction.diff(from: current, to: compilation.ruleset)
        // A full sync that must change rules nobody asked to change found someone else's edit.
        if !replace && !repairReported && !transaction.isEmpty && assembly?.describesSameRules(as: next) == true {
            metrics.increment(.driftRepairs)
            logger.warning("nftproxy's tables were changed by someone else; repairing", metadata: [
                "why": "the full resync found \(transaction.operations.count) operation(s) to redo",
            ])
        }
        if replace {
            let tables = (try? backend.ourTables()) ?? []
            transaction.operations = tables.flatMap { [Operation.addTable($0, comment: nil), .deleteTable($0)] } + transaction.operations
        } else {
            transaction.operations += Transaction.pruning(current, set: Naming.affinity, companion: Naming.affinityClients,
                                                          keep: compilation.affinity.keeps)
        }
        if !transaction.isEmpty { try backend.apply(transaction) }
        lastGeneration = try? backend.generation()
    }

    /// Recompiles only the services the changes can reach and sends what their fragments changed.
    ///
    /// The assembly is changed in place: no other reference to it may live meanwhile (not even
    /// the status snapshot's), or the first change would copy every fragment. If the batch
    /// fails (or only a full diff can express it), the assembly is put back as the kernel still
    /// has it, so the full sync that follows knows what was there (for conntrack and drift).
    private func partialSync(_ changes: ObjectStore.Changes, started: ContinuousClock.Instant, pendingSince: ContinuousClock.Instant?) {
        var refs = changes.services
        if !changes.podNamespaces.isEmpty { refs.formUnion(store.services(in: changes.podNamespaces)) }
        status.update { $0.applied = nil; $0.lastApplied = nil; $0.changing = true }
        var next = assembly!
        assembly = nil
        let previousPorts = refs.flatMap { next.fragments[$0]?.udpPorts ?? [] }
        let before = Dictionary(uniqueKeysWithValues: refs.map { ($0, next.fragments[$0]) })
        var fragments: [ObjectRef: ServiceFragment?] = [:]
        for ref in refs {
            guard let service = store.service(ref), quarantine["\(ref.namespace)/\(ref.name)"] == nil else {
                fragments.updateValue(nil, forKey: ref)
                continue
            }
            let objects = store.state(for: service)
            fragments[ref] = RuleCompiler.fragment(service, backends: objects.backends(for: service), facts: next.facts, sharding: next.sharding)
        }
        guard let operations = next.replace(fragments) else {
            // A family's node table comes or goes: only a full diff knows how.
            _ = next.replace(before)
            assembly = next
            fullSync(started: started, pendingSince: pendingSince)
            return
        }
        let transaction = Transaction(operations)
        do {
            if !transaction.isEmpty {
                try backend.apply(transaction)
                lastGeneration = try? backend.generation()
            }
        } catch {
            _ = next.replace(before)
            assembly = next
            failed(error, transaction: transaction, full: false)
            return
        }
        let currentPorts = refs.flatMap { next.fragments[$0]?.udpPorts ?? [] }
        assembly = next
        succeeded(transaction, full: false, started: started, finished: .now, pendingSince: pendingSince)
        cleanConntrack(previous: previousPorts, current: currentPorts)
    }

    private func succeeded(_ transaction: Transaction, full: Bool, started: ContinuousClock.Instant, finished: ContinuousClock.Instant,
                           pendingSince: ContinuousClock.Instant?) {
        lastSyncEnd = finished
        repairReported = false
        retryAt = nil
        needsFull = false
        record(transaction, full: full, started: started, finished: finished, pendingSince: pendingSince)
        onSync?(transaction)
    }

    /// After the rules changed, UDP flows still pinned by conntrack to an endpoint that is gone
    /// (or recorded un-NATed while a service had no endpoint) are deleted. With no earlier
    /// ports known (the first sync) every UDP port is checked; otherwise only ports whose
    /// serving endpoints changed, that went away or that are new.
    private func cleanConntrack(previous: [UDPServicePort]?, current ports: [UDPServicePort]) {
        guard let conntrack else { return }
        let key = { (port: UDPServicePort) in "\(port.name)|\(port.family)" }
        let current = Dictionary(ports.map { (key($0), $0) }, uniquingKeysWith: { a, _ in a })
        var flushes: [ConntrackFlush] = []
        if let previous {
            for old in previous {
                let now = current[key(old)]
                if now?.servingEndpoints == old.servingEndpoints && now?.destinations == old.destinations && now?.nodePort == old.nodePort {
                    continue
                }
                flushes.append(ConntrackFlush(family: Family(old.family), destinations: old.destinations, port: old.port,
                                              nodePort: old.nodePort, keepReplySources: now?.servingEndpoints ?? []))
            }
            let previousKeys = Set(previous.map(key))
            for port in ports where !previousKeys.contains(key(port)) {
                flushes.append(ConntrackFlush(family: Family(port.family), destinations: port.destinations, port: port.port,
                                              nodePort: port.nodePort, keepReplySources: port.servingEndpoints))
            }
        } else {
            flushes = ports.map {
                ConntrackFlush(family: Family($0.family), destinations: $0.destinations, port: $0.port,
                               nodePort: $0.nodePort, keepReplySources: $0.servingEndpoints)
            }
        }
        guard !flushes.isEmpty else { return }
        do {
            let deleted = try conntrack.flush(flushes)
            if deleted > 0 { logger.info("deleted stale UDP conntrack entries", metadata: ["count": "\(deleted)"]) }
        } catch {
            logger.warning("UDP conntrack cleanup failed", metadata: ["error": "\(error)"])
        }
    }

    private func record(_ transaction: Transaction, full: Bool, started: ContinuousClock.Instant,
                        finished: ContinuousClock.Instant, pendingSince: ContinuousClock.Instant?) {
        metrics.observe(.syncDuration, (finished - started).seconds)
        metrics.set(.lastSync, Double(finished.wallSeconds))
        if !transaction.isEmpty { metrics.set(.batchOperations, Double(transaction.operations.count)) }
        metrics.set(.skippedObjects, Double(store.skippedCount))
        let noLocal = assembly?.noLocalEndpoints ?? (internal: 0, external: 0)
        metrics.set(.noLocalEndpoints, Double(noLocal.internal), labels: ["traffic_policy": "internal"])
        metrics.set(.noLocalEndpoints, Double(noLocal.external), labels: ["traffic_policy": "external"])
        metrics.set(.quarantined, Double(quarantine.count))
        if let pendingSince { metrics.observe(.programmingLatency, (finished - pendingSince).seconds) }
        let stillPending = dirty ? status.current.pendingSince : nil
        let applied = assembly
        status.update {
            $0.lastUpdated = finished
            $0.pendingSince = stillPending
            $0.healthChecks = applied?.healthChecks ?? []
            $0.applied = applied
            $0.lastApplied = nil
            $0.changing = false
            $0.quarantined = quarantine.keys.sorted()
        }
        if !transaction.isEmpty {
            logger.info("rules synced", metadata: [
                "sync": "\(full ? "full" : "partial")",
                "operations": "\(transaction.operations.count)",
                "duration_ms": "\(Int((finished - started).seconds * 1000))",
            ])
        } else {
            logger.debug("rules already in place", metadata: ["sync": "\(full ? "full" : "partial")"])
        }
    }

    private func failed(_ error: BackendError, transaction: Transaction, full: Bool) {
        metrics.increment(.syncFailures)
        status.update { $0.lastFailure = (error, transaction) }
        needsFull = true
        if error.isAboutOneObject, let service = error.operation?.service, quarantine[service] == nil {
            // One object poisons nothing else: leave it out and program the rest right away.
            quarantine[service] = ContinuousClock.now + timing.syncPeriod
            metrics.set(.quarantined, Double(quarantine.count))
            status.update { $0.quarantined = quarantine.keys.sorted() }
            logger.error("kernel refused a service; leaving it out until the next retry", metadata: [
                "service": "\(service)", "error": "\(error)",
            ])
            return
        }
        retryAt = ContinuousClock.now + timing.syncPeriod
        logger.error("sync failed; retrying", metadata: ["error": "\(error)", "retry_in": "\(timing.syncPeriod)"])
    }

    // MARK: - Drift

    /// A commit by anyone changes the generation; only then are our tables read and compared.
    private func checkDrift() {
        guard let assembly, let known = lastGeneration else { return }
        guard let generation = try? backend.generation(), generation != known else { return }
        let current: Ruleset
        do {
            current = try backend.readOurs()
        } catch {
            driftFound("our tables hold rules nftproxy did not write: \(error)")
            return
        }
        lastGeneration = generation
        if !Transaction.diff(from: current, to: assembly.ruleset()).isEmpty {
            driftFound("our tables differ from the last applied rules")
        }
    }

    private func driftFound(_ why: String) {
        repairReported = true
        metrics.increment(.driftRepairs)
        logger.warning("nftproxy's tables were changed by someone else; repairing", metadata: ["why": "\(why)"])
        needsFull = true
        retryAt = nil
    }
}

extension BackendError {
    /// Whether the kernel refused one object for what it is (bad value, missing or duplicate
    /// reference), as opposed to the batch failing as a whole (memory, buffers, permission, a
    /// concurrent writer): only the former is a reason to leave a service out.
    var isAboutOneObject: Bool {
        [EINVAL, ENOENT, EEXIST, EOPNOTSUPP, ERANGE, E2BIG, ELOOP, EMLINK, EBUSY].contains(errno)
    }
}

extension Operation {
    /// The Service (`ns/name`) an operation belongs to, if it is one service's chain or element.
    var service: String? {
        switch self {
        case .addChain(_, let name, _), .flushChain(_, let name), .deleteChain(_, let name), .addRule(_, let name, _):
            return Naming.service(ofChain: name)
        case .addElements(_, _, let elements), .deleteElements(_, _, let elements):
            guard elements.count == 1, let comment = elements[0].comment else { return nil }
            return Naming.service(ofComment: comment)
        default:
            return nil
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

extension ContinuousClock.Instant {
    /// Seconds since the Unix epoch for this instant (for the last-sync timestamp).
    var wallSeconds: Int {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        let nowWall = Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
        return Int(nowWall - (ContinuousClock.now - self).seconds)
    }
}

#if canImport(Glibc)
import Glibc
#endif
