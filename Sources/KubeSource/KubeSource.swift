internal import AsyncHTTPClient
internal import Foundation
public import Logging
internal import NIOCore
internal import NIOHTTP1
public import ProxyController
internal import ServiceModel
internal import Synchronization

/// Lists and watches Services, EndpointSlices and this Node on the API server and keeps a
/// `SyncController`'s store equal to what the server has, as kube-proxy's informers do:
///
/// - list (paged with `limit`/`continue`) and replace that kind in the store, then watch from the
///   list's resourceVersion with bookmarks; ADDED/MODIFIED upsert, DELETED removes;
/// - a 410 (too old resourceVersion) re-lists that kind, and the replace deletes whatever
///   vanished meanwhile; a watch that ends, drops or goes silent resumes from the last version;
/// - failures are retried with capped, jittered exponential backoff and logged once per outage.
///   Nothing in the store changes until the server answers again, so the rules stay as they are.
///
/// The controller is told it may write rules only once every kind has been listed.
public final class KubeSource: Sendable {
    /// What to watch and how patiently.
    public struct Options: Sendable {
        /// This node's name: its Node object is watched by `fieldSelector=metadata.name=…`.
        public var nodeName: String
        /// kube-proxy's selector (`noProxyName`, `noHeadlessEndpoints`): Services claimed by
        /// another proxy, and headless Services' slices, are not even sent to us.
        public var labelSelector = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
        /// Objects per list page.
        public var pageSize = 500
        /// The watch length asked of the server (`timeoutSeconds`); it then ends cleanly and is resumed.
        public var watchTimeout: Duration = .seconds(300)
        /// How often the server sends BOOKMARKs (about once a minute on a real API server).
        public var bookmarkInterval: Duration = .seconds(60)
        /// A watch with no event and no bookmark for this many bookmark intervals is taken as
        /// stalled (a half-open connection) and re-established.
        public var stallIntervals: Double = 3
        /// Backoff between failed attempts: doubles from `initialBackoff` up to `maximumBackoff`,
        /// each wait drawn at random from its upper half.
        public var initialBackoff: Duration = .milliseconds(200)
        public var maximumBackoff: Duration = .seconds(10)
        /// Time allowed for connecting, and for a whole list request.
        public var connectTimeout: Duration = .seconds(5)
        public var requestTimeout: Duration = .seconds(60)

        public init(nodeName: String) {
            self.nodeName = nodeName
        }
    }

    /// How often each thing happened, for tests and metrics.
    public struct Counters: Sendable, Equatable {
        /// Complete lists of one kind (first lists and re-lists).
        public var lists = 0
        /// Watch requests sent.
        public var watches = 0
        /// Lists after the first for that kind (after a 410).
        public var relists = 0
        /// Watches resumed after one ended, dropped or stalled.
        public var reconnects = 0
        /// Watches dropped because nothing arrived for too long.
        public var stalls = 0
        /// Watch events applied (ADDED, MODIFIED, DELETED).
        public var events = 0
        /// Failed requests (connection, TLS, HTTP errors, bad replies).
        public var failures = 0
        /// Requests answered 401 or 403.
        public var unauthorized = 0
    }

    /// One listed and watched kind.
    struct Resource: Sendable {
        var kind: ObjectStore.Kind
        /// The plural, for logs and problem sources ("services").
        var name: String
        var path: String
        var apiVersion: String
        var namespaced: Bool
        var selector: [(key: String, value: String)]
    }

    private let config: KubeConfig
    private let options: Options
    private let logger: Logger
    private let token: BearerToken?
    private let httpConfiguration: HTTPClient.Configuration
    private let resources: [Resource]
    private let state = Mutex(State())

    private struct State {
        var counters = Counters()
        var listed: Set<ObjectStore.Kind> = []
        var readyMarked = false
        /// Kinds whose last attempt failed; an outage lasts while this is not empty.
        var failing: Set<ObjectStore.Kind> = []
        var outageStart: ContinuousClock.Instant?
        var outageAttempts = 0
        /// The class of the failure last logged, so a different trouble in the same outage is logged too.
        var loggedFailure: String?
        var lastError: String?
    }

    /// Fails, naming the field, when a certificate or key in `config` is unusable.
    public init(config: KubeConfig, options: Options, logger: Logger = Logger(label: "nftproxy.kube")) throws(KubeConfigError) {
        self.config = config
        self.options = options
        self.logger = logger
        self.token = config.token.map(BearerToken.init)
        var http = HTTPClient.Configuration(
            tlsConfiguration: try config.tlsConfiguration(),
            redirectConfiguration: .disallow,
            timeout: .init(connect: .nanoseconds(options.connectTimeout.nanoseconds), read: nil),
            decompression: .disabled
        )
        // One connection per watch: cancelling a stalled watch closes its connection, where
        // HTTP/2 would keep multiplexing new watches onto the same possibly dead connection.
        http.httpVersion = .http1Only
        // Fail a request at the first refused connect, with the real error: our own backoff is
        // capped at `maximumBackoff`, where the pool's would grow to a minute during an outage
        // and answer only "getConnectionFromPoolTimeout".
        http.connectionPool.retryConnectionEstablishment = false
        self.httpConfiguration = http
        let selector = [(key: "labelSelector", value: options.labelSelector)].filter { !$0.value.isEmpty }
        self.resources = [
            Resource(kind: .service, name: "services", path: "/api/v1/services", apiVersion: "v1",
                     namespaced: true, selector: selector),
            Resource(kind: .endpointSlice, name: "endpointslices", path: "/apis/discovery.k8s.io/v1/endpointslices",
                     apiVersion: "discovery.k8s.io/v1", namespaced: true, selector: selector),
            Resource(kind: .node, name: "nodes", path: "/api/v1/nodes", apiVersion: "v1", namespaced: false,
                     selector: [(key: "fieldSelector", value: "metadata.name=\(options.nodeName)")]),
        ]
    }

    public var counters: Counters { state.withLock { $0.counters } }

    /// Every kind has been listed at least once.
    public var isSynced: Bool { state.withLock { $0.readyMarked } }

    /// The last failure, if the server is not answering right now.
    public var currentError: String? { state.withLock { $0.failing.isEmpty ? nil : $0.lastError } }

    /// Lists and watches until the task is cancelled, feeding `controller`.
    public func run(into controller: SyncController) async {
        if let name = config.tlsServerName {
            logger.warning("tls-server-name is not supported; the server certificate is checked against the URL's host", metadata: [
                "tls_server_name": "\(name)", "server": "\(config.server)",
            ])
        }
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfiguration)
        await withTaskGroup(of: Void.self) { group in
            for resource in resources {
                group.addTask { await self.reflect(resource, client: client, into: controller) }
            }
        }
        try? await client.shutdown()
    }

    // MARK: - One kind's list+watch loop

    private func reflect(_ resource: Resource, client: HTTPClient, into controller: SyncController) async {
        var resourceVersion: String?
        var backoff = Backoff(initial: options.initialBackoff, maximum: options.maximumBackoff)
        while !Task.isCancelled {
            do {
                if resourceVersion == nil {
                    let (objects, version) = try await list(resource, client: client)
                    await controller.update { $0.replace([resource.kind], with: objects) }
                    resourceVersion = version
                    await listed(resource, into: controller)
                    backoff.reset()
                }
                let outcome = try await watch(resource, from: resourceVersion!, client: client, into: controller)
                resourceVersion = outcome.resourceVersion
                switch outcome.end {
                case .expired(let message):
                    logger.info("watch history expired; re-listing", metadata: [
                        "resource": "\(resource.name)", "reason": "\(message)",
                    ])
                    resourceVersion = nil
                case .ended, .dropped, .stalled:
                    state.withLock { $0.counters.reconnects += 1 }
                    logger.debug("watch ended; resuming", metadata: [
                        "resource": "\(resource.name)", "how": "\(outcome.end)", "resource_version": "\(resourceVersion!)",
                    ])
                    if case .stalled = outcome.end {
                        logger.warning("watch stalled; re-establishing it", metadata: [
                            "resource": "\(resource.name)", "silent_for": "\(stallTimeout)",
                        ])
                    }
                }
                if outcome.productive {
                    backoff.reset()
                } else {
                    // A watch that ends at once every time must not become a busy loop.
                    try await Task.sleep(for: backoff.next())
                }
            } catch is CancellationError {
                return
            } catch {
                if Task.isCancelled { return }
                failed(resource, error)
                do { try await Task.sleep(for: backoff.next()) } catch { return }
            }
        }
    }

    private func listed(_ resource: Resource, into controller: SyncController) async {
        let ready = state.withLock { state -> Bool in
            state.counters.lists += 1
            if state.listed.contains(resource.kind) { state.counters.relists += 1 }
            state.listed.insert(resource.kind)
            guard !state.readyMarked, state.listed.count == resources.count else { return false }
            state.readyMarked = true
            return true
        }
        if ready {
            logger.info("initial lists complete", metadata: ["resources": "\(resources.map(\.name).joined(separator: ","))"])
            await controller.markReady()
        }
    }

    // MARK: - Failures and outages

    /// Counts a failure; logs it only when an outage starts or its cause changes.
    private func failed(_ resource: Resource, _ error: any Error) {
        let failure = (error as? KubeSourceError) ?? .transport(String(describing: error))
        let (log, attempts) = state.withLock { state -> (Bool, Int) in
            state.counters.failures += 1
            if failure.isUnauthorized { state.counters.unauthorized += 1 }
            if state.failing.isEmpty {
                state.outageStart = .now
                state.outageAttempts = 0
                state.loggedFailure = nil
            }
            state.failing.insert(resource.kind)
            state.outageAttempts += 1
            state.lastError = failure.description
            let log = state.loggedFailure != failure.category
            state.loggedFailure = failure.category
            return (log, state.outageAttempts)
        }
        var metadata: Logger.Metadata = [
            "resource": "\(resource.name)", "server": "\(config.server)", "error": "\(failure)",
        ]
        if let code = failure.statusCode { metadata["status"] = "\(code)" }
        guard log else {
            logger.debug("API request failed; retrying", metadata: metadata.merging(["attempts": "\(attempts)"]) { $1 })
            return
        }
        if failure.isUnauthorized {
            logger.error("API server rejected nftproxy's credentials; retrying with backoff", metadata: metadata)
        } else if failure.statusCode != nil {
            logger.warning("API server answered with an error; retrying with backoff", metadata: metadata)
        } else {
            logger.warning("cannot reach the API server; retrying with backoff, rules stay as they are", metadata: metadata)
        }
    }

    /// A request of `resource` got a good answer: the outage ends when every kind has one.
    private func succeeded(_ resource: Resource) {
        let ended = state.withLock { state -> (Duration, Int)? in
            guard state.failing.remove(resource.kind) != nil, state.failing.isEmpty else { return nil }
            let duration = state.outageStart.map { ContinuousClock.now - $0 } ?? .zero
            state.outageStart = nil
            state.loggedFailure = nil
            return (duration, state.outageAttempts)
        }
        if let (duration, attempts) = ended {
            logger.info("API server reachable again", metadata: [
                "server": "\(config.server)", "outage": "\(duration)", "attempts": "\(attempts)",
            ])
        }
    }

    // MARK: - List

    private func list(_ resource: Resource, client: HTTPClient) async throws -> (ClusterState, String) {
        var objects = ClusterState()
        var continueToken: String?
        var restarts = 0
        while true {
            var query = resource.selector
            query.append((key: "limit", value: "\(options.pageSize)"))
            if let continueToken { query.append((key: "continue", value: continueToken)) }
            let response = try await client.execute(try request(resource.path, query), deadline: deadline(options.requestTimeout))
            let body = try await response.body.collect(upTo: 512 << 20)
            let text = String(buffer: body)
            if response.status.code == 410 && continueToken != nil && restarts < 3 {
                // The continue token expired (about 5 minutes): start the list over.
                restarts += 1
                objects = ClusterState()
                continueToken = nil
                continue
            }
            try check(response.status, body: text, resource: resource)
            let head: ListHead
            do {
                head = try JSONDecoder().decode(ListHead.self, from: Data(text.utf8))
            } catch {
                throw KubeSourceError.protocolError("list of \(resource.name) is not a JSON list: \(error)")
            }
            guard let version = head.metadata?.resourceVersion, !version.isEmpty else {
                throw KubeSourceError.protocolError("list of \(resource.name) has no metadata.resourceVersion")
            }
            objects.merge(StateDecoder.decode(text, source: "list \(resource.name)"))
            succeeded(resource)
            guard let next = head.metadata?.continue, !next.isEmpty else { return (objects, version) }
            continueToken = next
        }
    }

    // MARK: - Watch

    private struct WatchOutcome {
        enum End: CustomStringConvertible {
            /// The server closed the stream (timeoutSeconds).
            case ended
            /// The connection broke mid-stream.
            case dropped(String)
            /// Nothing arrived for too long.
            case stalled
            /// 410: the history the watch needs is gone; re-list.
            case expired(String)

            var description: String {
                switch self {
                case .ended: "ended"
                case .dropped(let why): "dropped (\(why))"
                case .stalled: "stalled"
                case .expired(let why): "expired (\(why))"
                }
            }
        }

        var resourceVersion: String
        var end: End
        /// It delivered something or lasted a while: resume at once rather than back off.
        var productive: Bool
    }

    /// What one watch request has seen, shared between its reader and its stall watchdog.
    private final class WatchProgress: Sendable {
        let state: Mutex<(resourceVersion: String, lastActivity: ContinuousClock.Instant, frames: Int)>

        init(_ resourceVersion: String) {
            state = Mutex((resourceVersion, .now, 0))
        }
    }

    private var stallTimeout: Duration { options.bookmarkInterval * options.stallIntervals }

    private func watch(_ resource: Resource, from resourceVersion: String, client: HTTPClient,
                       into controller: SyncController) async throws -> WatchOutcome {
        let seconds = max(1, Int((options.watchTimeout.nanoseconds + 999_999_999) / 1_000_000_000))
        var query = resource.selector
        query += [
            (key: "watch", value: "1"), (key: "resourceVersion", value: resourceVersion),
            (key: "allowWatchBookmarks", value: "true"), (key: "timeoutSeconds", value: "\(seconds)"),
        ]
        state.withLock { $0.counters.watches += 1 }
        let started = ContinuousClock.now
        let response = try await client.execute(try request(resource.path, query),
                                                deadline: deadline(.seconds(seconds) + options.requestTimeout))
        if response.status.code == 410 {
            let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
            succeeded(resource)
            return WatchOutcome(resourceVersion: resourceVersion, end: .expired(Self.statusMessage(text) ?? "HTTP 410"), productive: true)
        }
        if response.status != .ok {
            let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
            try check(response.status, body: text, resource: resource)
        }
        succeeded(resource)

        let progress = WatchProgress(resourceVersion)
        let end: WatchOutcome.End = await withTaskGroup(of: WatchOutcome.End?.self) { group in
            group.addTask {
                do {
                    return try await self.readEvents(response.body, resource: resource, progress: progress, into: controller)
                } catch {
                    return Task.isCancelled ? nil : .dropped(String(describing: error))
                }
            }
            group.addTask {
                // The watchdog: returns when the stream has been silent for too long.
                let timeout = self.stallTimeout
                while true {
                    let last = progress.state.withLock { $0.lastActivity }
                    if ContinuousClock.now - last >= timeout { return .stalled }
                    do { try await Task.sleep(until: last + timeout, clock: .continuous) } catch { return nil }
                }
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? .ended
        }
        let (version, frames) = progress.state.withLock { ($0.resourceVersion, $0.frames) }
        if case .stalled = end { state.withLock { $0.counters.stalls += 1 } }
        return WatchOutcome(resourceVersion: version, end: end,
                            productive: frames > 0 || ContinuousClock.now - started >= .seconds(1))
    }

    /// One change the watch asks for, applied in order with the others of the same chunk.
    private enum Change {
        case upsert(ObjectRef, ClusterState)
        case remove(ObjectRef)
    }

    /// Applies a watch stream's events until it ends or expires.
    private func readEvents(_ body: HTTPClientResponse.Body, resource: Resource, progress: WatchProgress,
                            into controller: SyncController) async throws -> WatchOutcome.End {
        var framer = JSONFramer()
        for try await buffer in body {
            var changes: [Change] = []
            var expired: String?
            for frame in try framer.append(buffer.readableBytesView) {
                let event: WatchEvent
                do {
                    event = try JSONDecoder().decode(WatchEvent.self, from: Data(frame))
                } catch {
                    throw KubeSourceError.protocolError("a watch event of \(resource.name) is not valid: \(error)")
                }
                let version = event.object["metadata"]?["resourceVersion"]?.string
                switch event.type {
                case "ADDED", "MODIFIED":
                    var object = event.object
                    if case .object(var fields) = object {
                        // Watch objects carry kind and apiVersion, but do not rely on it.
                        if fields["kind"] == nil { fields["kind"] = .string(resource.kind.rawValue) }
                        if fields["apiVersion"] == nil { fields["apiVersion"] = .string(resource.apiVersion) }
                        object = .object(fields)
                    }
                    let decoded = StateDecoder.decode(object.text, source: "watch \(resource.name)")
                    changes.append(.upsert(ref(of: event.object, resource), decoded))
                case "DELETED":
                    changes.append(.remove(ref(of: event.object, resource)))
                case "BOOKMARK":
                    break
                case "ERROR":
                    let code = event.object["code"]?.integer
                    let message = event.object["message"]?.string ?? "no message"
                    if code == 410 {
                        expired = message
                    } else {
                        try await apply(changes, into: controller)
                        throw KubeSourceError.status(code: Int(code ?? 500), message: "watch error: \(message)")
                    }
                default:
                    logger.debug("ignoring a watch event of unknown type", metadata: ["resource": "\(resource.name)", "type": "\(event.type)"])
                }
                progress.state.withLock {
                    $0.lastActivity = .now
                    $0.frames += 1
                    if event.type != "ERROR", let version, !version.isEmpty { $0.resourceVersion = version }
                }
                if expired != nil { break }
            }
            try await apply(changes, into: controller)
            if let expired { return .expired(expired) }
        }
        return .ended
    }

    private func apply(_ changes: [Change], into controller: SyncController) async throws {
        guard !changes.isEmpty else { return }
        await controller.update { store in
            for change in changes {
                switch change {
                case .upsert(let ref, let decoded):
                    // Replace, do not merge: an object the decoder now leaves out must not keep its old rules.
                    store.remove(ref)
                    store.upsert(decoded)
                case .remove(let ref):
                    store.remove(ref)
                }
            }
        }
        state.withLock { $0.counters.events += changes.count }
    }

    private func ref(of object: JSONValue, _ resource: Resource) -> ObjectRef {
        let metadata = object["metadata"]
        let name = metadata?["name"]?.string ?? ""
        let namespace = resource.namespaced ? (metadata?["namespace"]?.string).flatMap { $0.isEmpty ? nil : $0 } ?? "default" : ""
        return ObjectRef(kind: resource.kind.rawValue, namespace: namespace, name: name)
    }

    // MARK: - HTTP

    private func request(_ path: String, _ query: [(key: String, value: String)]) throws -> HTTPClientRequest {
        let encoded = query.map { "\(Self.escape($0.key))=\(Self.escape($0.value))" }.joined(separator: "&")
        var request = HTTPClientRequest(url: "\(config.server)\(path)?\(encoded)")
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "nftproxy")
        if let token {
            request.headers.add(name: "Authorization", value: "Bearer \(try token.current())")
        }
        return request
    }

    private func check(_ status: HTTPResponseStatus, body: String, resource: Resource) throws(KubeSourceError) {
        guard status != .ok else { return }
        let message = Self.statusMessage(body) ?? status.reasonPhrase
        throw KubeSourceError.status(code: Int(status.code), message: "\(resource.name): \(message)")
    }

    private static func statusMessage(_ body: String) -> String? {
        (try? JSONDecoder().decode(Status.self, from: Data(body.utf8)))?.message
    }

    private static let unreserved = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")

    private static func escape(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? text
    }

    private func deadline(_ duration: Duration) -> NIODeadline {
        .now() + .nanoseconds(duration.nanoseconds)
    }
}

/// Why a request to the API server failed.
public enum KubeSourceError: Error, Sendable, CustomStringConvertible {
    /// The token file cannot be read.
    case configuration(String)
    /// An HTTP error status, or an ERROR watch event.
    case status(code: Int, message: String)
    /// A reply that is not what the API sends.
    case protocolError(String)
    /// Connection, TLS or timeout trouble.
    case transport(String)

    public var description: String {
        switch self {
        case .configuration(let message): message
        case .status(let code, let message): "HTTP \(code): \(message)"
        case .protocolError(let message): message
        case .transport(let message): message
        }
    }

    var statusCode: Int? {
        if case .status(let code, _) = self { return code }
        return nil
    }

    var isUnauthorized: Bool { statusCode == 401 || statusCode == 403 }

    /// Failures of one category are logged once per outage.
    var category: String {
        switch self {
        case .configuration: "configuration"
        case .status(let code, _): "status \(code)"
        case .protocolError: "protocol"
        case .transport: "transport"
        }
    }
}

/// Exponential backoff with jitter: each wait is drawn from the upper half of the current step.
struct Backoff {
    let initial: Duration
    let maximum: Duration
    private var step: Duration

    init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = maximum
        self.step = initial
    }

    mutating func reset() { step = initial }

    mutating func next() -> Duration {
        let current = min(step, maximum)
        step = min(step * 2, maximum)
        return current * Double.random(in: 0.5...1.0)
    }
}

extension Duration {
    var nanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }
}
