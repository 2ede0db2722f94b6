internal import NIOCore
internal import NIOHTTP1
internal import NIOPosix
internal import Synchronization
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

/// What a responder sees of a request. Every path answers any method (HEAD without the body),
/// as Go's `ServeMux` patterns without a method do.
struct Request: Sendable {
    /// The path without the query string.
    var path: String
}

/// One listening socket serving HTTP/1.1 with a fixed responder. Closing it stops accepting at
/// once, lets a request in progress get its answer, and then closes every connection.
final class HTTPListener: Sendable {
    let address: BindAddress
    /// The port the kernel gave (differs from `address.port` when that is 0).
    let boundPort: Int
    private let channel: any Channel
    private let connections: Connections

    private init(address: BindAddress, boundPort: Int, channel: any Channel, connections: Connections) {
        self.address = address
        self.boundPort = boundPort
        self.channel = channel
        self.connections = connections
    }

    static func bind(_ address: BindAddress, server: String, group: any EventLoopGroup,
                     responder: @escaping @Sendable (Request) -> Reply) async throws(AgentHTTPError) -> HTTPListener {
        let connections = Connections()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 128)
            // As Go's net.Listen: a port closed a moment ago (TIME_WAIT) can be listened on again.
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                connections.add(channel)
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(RequestHandler(responder: responder))
                }
            }
        do {
            let socketAddress = try SocketAddress(ipAddress: address.host, port: address.port)
            let channel = try await bootstrap.bind(to: socketAddress).get()
            let port = channel.localAddress?.port ?? address.port
            return HTTPListener(address: address, boundPort: port, channel: channel, connections: connections)
        } catch {
            throw .bindFailed(server: server, address: address.description, reason: describe(error))
        }
    }

    /// Stops accepting, then asks each open connection to finish its current request and close.
    func close() async {
        try? await channel.close()
        for connection in connections.drain() {
            connection.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        // A peer that never finishes its request does not hold shutdown up for long.
        let open = connections.all()
        let deadlines = open.map { connection in
            connection.eventLoop.scheduleTask(in: .seconds(5)) { connection.close(promise: nil) }
        }
        for connection in open { try? await connection.closeFuture.get() }
        for deadline in deadlines { deadline.cancel() }
    }
}

/// The accepted connections still open, so closing a listener can close them too.
private final class Connections: Sendable {
    private let open = Mutex<(closing: Bool, channels: [ObjectIdentifier: any Channel])>((false, [:]))

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        let accepted = open.withLock { state in
            if !state.closing { state.channels[id] = channel }
            return !state.closing
        }
        guard accepted else { return channel.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in
            self.open.withLock { _ = $0.channels.removeValue(forKey: id) }
        }
    }

    /// Refuses further connections and returns the open ones.
    func drain() -> [any Channel] {
        open.withLock { state in
            state.closing = true
            return Array(state.channels.values)
        }
    }

    func all() -> [any Channel] { open.withLock { Array($0.channels.values) } }
}

/// Reads one request at a time (the pipeline handler queues pipelined ones) and writes the
/// responder's reply; closes after it unless the client asked to keep the connection.
private final class RequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let responder: @Sendable (Request) -> Reply
    private var head: HTTPRequestHead?

    init(responder: @escaping @Sendable (Request) -> Reply) { self.responder = responder }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break  // No path reads a body.
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? "/"
        let reply = responder(Request(path: path))
        var headers = HTTPHeaders(reply.headers)
        headers.add(name: "Content-Length", value: String(reply.body.utf8.count))
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let responseHead = HTTPResponseHead(version: head.version, status: HTTPResponseStatus(statusCode: reply.status),
                                            headers: headers)
        context.write(wrapOutboundOut(.head(responseHead)), promise: nil)
        if head.method != .HEAD && !reply.body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: reply.body.utf8.count)
            buffer.writeString(reply.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// The errno text of a socket error (`Address already in use (errno 98)`), not a type dump.
private func describe(_ error: any Error) -> String {
    if let error = error as? IOError { return "\(String(cString: strerror(error.errnoCode))) (errno \(error.errnoCode))" }
    return String(describing: error)
}
