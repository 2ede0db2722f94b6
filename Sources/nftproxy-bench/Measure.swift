import Foundation
import NftIR
import NftNetlink
import NftText
import ProxyController
import RuleCompiler
import ServiceModel
import Synchronization

/// The node facts every benchmark uses; the CLI gets the same through flags (`scripts/bench`).
/// `scripts/bench`'s node flags; BENCH_SHARDS (as `--table-shards`) fixes the shard count.
let benchConfig = NodeConfig(
    nodeName: "node-a", nodeIPs: [IPAddress("192.168.50.2")!], clusterCIDRs: [CIDR("10.0.0.0/8")!],
    serviceCIDRs: [CIDR("172.16.0.0/12")!],
    tableShards: ProcessInfo.processInfo.environment["BENCH_SHARDS"].flatMap { Int($0) }
)

/// CPU time of this process so far (user, system), in seconds.
func cpuTimes() -> (user: Double, system: Double) {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return (seconds(usage.ru_utime), seconds(usage.ru_stime))
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Times `body`: wall seconds and the process's user and system CPU seconds spent in it.
func measure<T>(_ body: () throws -> T) rethrows -> (value: T, wall: Double, user: Double, system: Double) {
    let cpu = cpuTimes()
    let start = ContinuousClock.now
    let value = try body()
    let wall = (ContinuousClock.now - start).seconds
    let after = cpuTimes()
    return (value, wall, after.user - cpu.user, after.system - cpu.system)
}

func loadState(_ path: String) throws -> ClusterState {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    return StateDecoder.decode(text, source: path)
}

/// Output: one `key=value` per line, read by scripts/bench.
func report(_ key: String, _ value: Double) { print("\(key)=\(String(format: "%.6f", value))") }
func report(_ key: String, _ value: Int) { print("\(key)=\(value)") }

/// `breakdown STATE --netns PATH`: where the time of one full apply goes, in process, into an
/// empty namespace: read + decode, compile, diff, netlink apply (batch build in user time, the
/// kernel in system time), then reading our tables back and checking they equal the compile.
func breakdown(statePath: String, netns: String) throws {
    let decoded = try measure { try loadState(statePath) }
    report("decode_s", decoded.wall)
    let compiled = measure { RuleCompiler.compile(decoded.value, config: benchConfig) }
    report("compile_s", compiled.wall)
    report("problems", compiled.value.problems.filter(\.skipped).count)
    let tables = compiled.value.ruleset.tables.map { TableRef($0.family, $0.name) }
    let backend = NetlinkBackend(netnsPath: netns)
    let empty = try backend.read(tables)
    let diffed = measure { Transaction.diff(from: empty, to: compiled.value.ruleset) }
    report("diff_s", diffed.wall)
    report("operations", diffed.value.operations.count)
    let applied = try measure { try backend.apply(diffed.value) }
    report("apply_s", applied.wall)
    report("apply_user_s", applied.user)
    report("apply_sys_s", applied.system)
    let read = try measure { try backend.read(tables) }
    report("read_s", read.wall)
    report("read_user_s", read.user)
    report("read_sys_s", read.system)
    let check = measure { Transaction.diff(from: read.value, to: compiled.value.ruleset) }
    report("readback_diff_s", check.wall)
    report("readback_differences", check.value.operations.count)
}

/// `render STATE [--runs R]`: `nftproxy render`'s three phases apart, the renderer R times: the
/// first run (what the CLI pays: fresh pages, cold caches), then best and median of all (the
/// machine is shared). The script goes nowhere, so no I/O is counted.
func render(statePath: String, runs: Int) throws {
    guard runs > 0 else { throw BenchError("--runs must be at least 1") }
    let decoded = try measure { try loadState(statePath) }
    report("decode_s", decoded.wall)
    let compiled = measure { RuleCompiler.compile(decoded.value, config: benchConfig) }
    report("compile_s", compiled.wall)
    var times: [Double] = []
    var bytes = 0
    for _ in 0..<runs {
        let rendered = measure { NftText.script(compiled.value.ruleset) }
        times.append(rendered.wall)
        bytes = rendered.value.utf8.count
    }
    report("render_first_s", times[0])
    report("render_best_s", percentile(times, 0))
    report("render_median_s", percentile(times, 50))
    report("render_bytes", bytes)
}

/// Resident memory of this process now and at its peak (VmRSS, VmHWM), in MiB.
func residentMemory() -> (now: Double, peak: Double) {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (.nan, .nan) }
    func field(_ name: String) -> Double {
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }),
              let kib = Double(line.split(separator: " ").dropFirst().first { !$0.isEmpty }.map(String.init) ?? "") else { return .nan }
        return kib / 1024
    }
    return (field("VmRSS"), field("VmHWM"))
}

/// `memory STATE`: resident memory (now and peak, MiB) after each phase of a full apply into
/// empty tables: read + decode, compile, diff against nothing. Nothing touches the kernel.
func memory(statePath: String) throws {
    func phase(_ name: String) {
        let memory = residentMemory()
        report("\(name)_rss_mib", memory.now)
        report("\(name)_peak_mib", memory.peak)
    }
    let state = try loadState(statePath)
    phase("decode")
    let compiled = RuleCompiler.compile(state, config: benchConfig)
    phase("compile")
    let transaction = Transaction.diff(from: nil, to: compiled.ruleset)
    phase("diff")
    report("operations", transaction.operations.count)
    report("stride_statement", MemoryLayout<Statement>.stride)
    report("stride_rule", MemoryLayout<Rule>.stride)
    report("stride_element", MemoryLayout<NftIR.Element>.stride)
    report("stride_keyvalue", MemoryLayout<KeyValue>.stride)
    report("stride_operation", MemoryLayout<NftIR.Operation>.stride)
    report("stride_chain", MemoryLayout<Chain>.stride)
    report("stride_placed_element", MemoryLayout<ServiceFragment.PlacedElement>.stride)
    report("stride_fragment", MemoryLayout<ServiceFragment>.stride)
    withExtendedLifetime((state, compiled)) {}
}

/// `readback --netns PATH [--out FILE] TABLE...`: time to read tables (family name, e.g. `ip
/// nftproxy`) back; with `--out`, what was read is written there as nft text, so that two builds'
/// read-backs can be compared.
func readback(netns: String, tables: [TableRef], out: String?) throws {
    let read = try measure { try NetlinkBackend(netnsPath: netns).read(tables) }
    report("read_s", read.wall)
    report("read_user_s", read.user)
    report("read_sys_s", read.system)
    report("chains", read.value.tables.reduce(0) { $0 + $1.chains.count })
    if let out { try NftText.script(read.value).write(toFile: out, atomically: false, encoding: .utf8) }
}

/// The kernel backend with a stopwatch: each apply's start, end and size go to `events`.
struct TimedBackend: RulesetBackend {
    struct Event: Sendable {
        var start: ContinuousClock.Instant
        var end: ContinuousClock.Instant
        var operations: Int
        var failed: Bool
        /// CPU time (user + kernel) of the applying thread: what the apply costs, whatever else
        /// the machine runs meanwhile.
        var cpu: Double
    }

    let inner: NetlinkBackend
    let events: AsyncStream<Event>.Continuation

    func apply(_ transaction: Transaction) throws(BackendError) {
        let start = ContinuousClock.now
        let cpuStart = threadCPUSeconds()
        do {
            try inner.apply(transaction)
        } catch {
            events.yield(Event(start: start, end: .now, operations: transaction.operations.count, failed: true, cpu: threadCPUSeconds() - cpuStart))
            throw error
        }
        events.yield(Event(start: start, end: .now, operations: transaction.operations.count, failed: false, cpu: threadCPUSeconds() - cpuStart))
    }

    func listTables() throws(BackendError) -> [TableRef] { try inner.listTables() }
    func read(_ tables: [TableRef]) throws(BackendError) -> Ruleset { try inner.read(tables) }
    func generation() throws(BackendError) -> UInt32 { try inner.generation() }
}

/// CPU seconds the calling thread has used (CLOCK_THREAD_CPUTIME_ID).
func threadCPUSeconds() -> Double {
    var spec = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &spec)
    return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    let rank = Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1
    return sorted[max(0, min(sorted.count - 1, rank))]
}

/// `incremental STATE --netns PATH --changes K [--seed-chunk S]`: the agent's control loop
/// (SyncController, minSyncPeriod 0) over the kernel backend in the namespace. After the full
/// load, K changes alternately add one endpoint to a service and remove it again; each is timed
/// from the `update` call to the return of the backend's apply (the kernel's ack), and split into
/// the update call itself, compile + diff (update returned → apply started) and the netlink apply.
///
/// The store is seeded as the agent does it, with one `replace` of every object, unless
/// `seedChunk` > 0: then S services (with their slices) go in per update before `markReady`.
/// (One upsert of N services and their slices costs O(N²) in ObjectStore today.)
func incremental(statePath: String, netns: String, changes: Int, seedChunk: Int) async throws {
    let state = try loadState(statePath)
    let (events, continuation) = AsyncStream<TimedBackend.Event>.makeStream()
    let backend = TimedBackend(inner: NetlinkBackend(netnsPath: netns), events: continuation)
    let controller = SyncController(backend: backend, config: benchConfig,
                                    timing: SyncTiming(minSyncPeriod: .zero, syncPeriod: .seconds(3600)))
    let loop = Task { await controller.run() }
    var iterator = events.makeAsyncIterator()

    let loadStart = ContinuousClock.now
    if seedChunk > 0 {
        let slicesByService = Dictionary(grouping: state.endpointSlices) { "\($0.namespace)/\($0.serviceName)" }
        for start in stride(from: 0, to: state.services.count, by: seedChunk) {
            let services = Array(state.services[start..<min(start + seedChunk, state.services.count)])
            var part = ClusterState(services: services, endpointSlices: services.flatMap { slicesByService["\($0.namespace)/\($0.name)"] ?? [] })
            part.servicesWithSlices = state.servicesWithSlices.intersection(services.map { "\($0.namespace)/\($0.name)" })
            let chunk = part
            await controller.update { $0.upsert(chunk) }
        }
    } else {
        await controller.update { $0.replace(ObjectStore.Kind.allCases, with: state) }
    }
    let seeded = ContinuousClock.now
    await controller.markReady()
    guard let load = await iterator.next(), !load.failed else { throw BenchError("the initial full sync failed") }
    report("load_s", (load.end - loadStart).seconds)
    report("seed_s", (seeded - loadStart).seconds)
    report("load_apply_s", (load.end - load.start).seconds)
    report("load_operations", load.operations)

    let slices = state.endpointSlices.filter { $0.endpoints.count > 0 }
    guard !slices.isEmpty else { throw BenchError("no EndpointSlice to change") }
    var totals: [Double] = [], updates: [Double] = [], compiles: [Double] = [], applies: [Double] = [], sizes: [Double] = []
    var applyCPU: [Double] = []
    var extra = 0
    for change in 0..<changes {
        let original = slices[(change / 2 * 7919) % slices.count]
        var slice = original
        if change % 2 == 0 {
            // a new endpoint beyond every generated address: 10.128.0.0/9
            var endpoint = slice.endpoints[0]
            endpoint.addresses = [IPAddress(bytes: [10, 128 + UInt8((change >> 16) & 0x7f), UInt8((change >> 8) & 0xff), UInt8(change & 0xff)])!]
            slice.endpoints.append(endpoint)
        }
        let changed = ClusterState(endpointSlices: [slice])
        let started = ContinuousClock.now
        await controller.update { $0.upsert(changed) }
        let updated = ContinuousClock.now
        guard let event = await iterator.next() else { throw BenchError("the controller stopped") }
        if event.failed { throw BenchError("an incremental apply failed") }
        totals.append((event.end - started).seconds)
        updates.append((updated - started).seconds)
        compiles.append((event.start - updated).seconds)
        applies.append((event.end - event.start).seconds)
        applyCPU.append(event.cpu)
        sizes.append(Double(event.operations))
        // let the loop record the sync before the next change
        try await Task.sleep(for: .milliseconds(2))
    }
    await controller.stop()
    loop.cancel()
    continuation.finish()
    while let event = await iterator.next() {
        if !event.failed { extra += 1 }
    }
    report("changes", changes)
    report("p50_s", percentile(totals, 50))
    report("p99_s", percentile(totals, 99))
    report("max_s", percentile(totals, 100))
    report("update_p50_s", percentile(updates, 50))
    report("compile_p50_s", percentile(compiles, 50))
    report("apply_p50_s", percentile(applies, 50))
    report("apply_p99_s", percentile(applies, 99))
    report("apply_cpu_p50_s", percentile(applyCPU, 50))
    report("ops_p50", percentile(sizes, 50))
    report("ops_max", percentile(sizes, 100))
    report("extra_applies", extra)
}
