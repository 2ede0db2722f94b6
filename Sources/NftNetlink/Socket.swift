internal import CNftables
import NftIR
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One NETLINK_NETFILTER socket, owned by one caller at a time and closed on deinit.
///
/// A netlink socket stays bound to the network namespace it was created in, so a socket for
/// another namespace is opened on a short-lived thread that enters the namespace first; the
/// calling thread never changes namespace.
final class NetlinkSocket: @unchecked Sendable {  // used by one caller at a time (SocketPool)
    private let socket: OpaquePointer  // struct mnl_socket *
    let fd: Int32
    let portID: UInt32
    private var lastSeq: UInt32 = 0
    /// `datagramsPerReceive` buffers of `datagramSize` bytes, one per datagram of a recvmmsg.
    private let receiveArea: UnsafeMutableRawBufferPointer
    private let receiveVectors: UnsafeMutableBufferPointer<iovec>
    private let receiveLengths: UnsafeMutableBufferPointer<Int>
    /// Where requests are written: a header and at most two names of at most 256 bytes.
    private let requestBuffer: UnsafeMutableRawBufferPointer

    /// Larger than any datagram the kernel sends us (dumps fill at most 32 KiB skbs).
    static let datagramSize = 64 * 1024
    /// A dump's datagrams are built one by one as they are received, so a 2 MiB receive area
    /// takes up to 32 of them per system call.
    static let datagramsPerReceive = 32

    init(netnsPath: String?) throws(BackendError) {
        let opened: OpaquePointer
        if let netnsPath {
            opened = try NetlinkSocket.openInNamespace(netnsPath)
        } else {
            opened = try NetlinkSocket.openHere()
        }
        socket = opened
        fd = mnl_socket_get_fd(opened)
        portID = mnl_socket_get_portid(opened)
        receiveArea = .allocate(byteCount: NetlinkSocket.datagramSize * NetlinkSocket.datagramsPerReceive, alignment: 16)
        receiveVectors = .allocate(capacity: NetlinkSocket.datagramsPerReceive)
        receiveLengths = .allocate(capacity: NetlinkSocket.datagramsPerReceive)
        requestBuffer = .allocate(byteCount: 1024, alignment: 16)
        for index in 0..<NetlinkSocket.datagramsPerReceive {
            receiveVectors[index] = iovec(iov_base: receiveArea.baseAddress! + index * NetlinkSocket.datagramSize, iov_len: NetlinkSocket.datagramSize)
        }
        var one: Int32 = 1
        // Errors carry the kernel's text (NETLINK_EXT_ACK) and do not echo our request (NETLINK_CAP_ACK).
        _ = mnl_socket_setsockopt(opened, Int32(NETLINK_EXT_ACK), &one, socklen_t(MemoryLayout<Int32>.size))
        _ = mnl_socket_setsockopt(opened, Int32(NETLINK_CAP_ACK), &one, socklen_t(MemoryLayout<Int32>.size))
        // Dumps block at most this long; the kernel answers synchronously, so this only guards a hang.
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        guard setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
            // Every stored property is set by now, so throwing runs deinit, which closes the socket.
            let code = errno
            throw BackendError(errno: code, message: "cannot set the netlink receive timeout: \(errorText(code))")
        }
    }

    deinit {
        receiveArea.deallocate()
        receiveVectors.deallocate()
        receiveLengths.deallocate()
        requestBuffer.deallocate()
        mnl_socket_close(socket)
    }

    private static func openHere() throws(BackendError) -> OpaquePointer {
        guard let socket = mnl_socket_open2(NETLINK_NETFILTER, Int32(SOCK_CLOEXEC.rawValue)) else {
            let code = errno
            throw BackendError(errno: code, message: "cannot open a netfilter netlink socket: \(errorText(code))")
        }
        guard mnl_socket_bind(socket, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let code = errno
            mnl_socket_close(socket)
            throw BackendError(errno: code, message: "cannot bind the netfilter netlink socket: \(errorText(code))")
        }
        return socket
    }

    /// Work handed to the namespace thread; it owns its result until the thread is joined.
    private final class NamespaceJob {
        let namespaceFD: Int32
        var socket: OpaquePointer?
        var error: BackendError?

        init(namespaceFD: Int32) { self.namespaceFD = namespaceFD }

        func run() {
            guard cnft_enter_netns(namespaceFD) == 0 else {
                let code = errno
                error = BackendError(errno: code, message: "cannot enter the network namespace: \(errorText(code))")
                return
            }
            do { socket = try NetlinkSocket.openHere() } catch { self.error = error }
        }
    }

    private static func openInNamespace(_ path: String) throws(BackendError) -> OpaquePointer {
        let namespaceFD = open(path, O_RDONLY | O_CLOEXEC)
        guard namespaceFD >= 0 else {
            let code = errno
            throw BackendError(errno: code, message: "cannot open network namespace \(path): \(errorText(code))")
        }
        defer { close(namespaceFD) }
        let job = NamespaceJob(namespaceFD: namespaceFD)
        let context = Unmanaged.passRetained(job).toOpaque()
        var thread = pthread_t()
        // The thread enters the namespace, opens the socket and exits, taking its namespace with it.
        let created = pthread_create(&thread, nil, { context in
            guard let context else { return nil }
            Unmanaged<NamespaceJob>.fromOpaque(context).takeRetainedValue().run()
            return nil
        }, context)
        guard created == 0 else {
            Unmanaged<NamespaceJob>.fromOpaque(context).release()
            throw BackendError(errno: created, message: "cannot start a thread for network namespace \(path): \(errorText(created))")
        }
        let joined = pthread_join(thread, nil)
        guard joined == 0 else {
            throw BackendError(errno: joined, message: "cannot join the network namespace thread: \(errorText(joined))")
        }
        if let error = job.error { throw BackendError(errno: error.errno, message: "\(error.message) (\(path))") }
        guard let socket = job.socket else { throw BackendError(errno: 0, message: "no socket opened in \(path)") }
        return socket
    }

    func nextSeq() -> UInt32 {
        lastSeq &+= 1
        return lastSeq
    }

    /// Reserves `count` consecutive sequence numbers and returns the first.
    func reserveSeqs(_ count: Int) -> UInt32 {
        let first = lastSeq &+ 1
        lastSeq &+= UInt32(count)
        return first
    }

    /// Sets a socket buffer with the *FORCE option (root may exceed net.core.[rw]mem_max),
    /// falling back to the plain one. The kernel doubles the value it is given.
    func setBuffer(send: Bool, bytes: Int) {
        var value = Int32(clamping: bytes)
        let size = socklen_t(MemoryLayout<Int32>.size)
        var current: Int32 = 0
        var currentSize = size
        if getsockopt(fd, SOL_SOCKET, send ? SO_SNDBUF : SO_RCVBUF, &current, &currentSize) == 0, Int(current) >= bytes * 2 { return }
        if setsockopt(fd, SOL_SOCKET, send ? SO_SNDBUFFORCE : SO_RCVBUFFORCE, &value, size) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, send ? SO_SNDBUF : SO_RCVBUF, &value, size)
        }
    }

    /// Sends one datagram made of `iovecs`.
    func send(_ iovecs: UnsafeMutableBufferPointer<iovec>) throws(BackendError) {
        var address = sockaddr_nl()
        address.nl_family = sa_family_t(AF_NETLINK)
        let sent = withUnsafeMutablePointer(to: &address) { addressPointer in
            var message = msghdr()
            message.msg_name = UnsafeMutableRawPointer(addressPointer)
            message.msg_namelen = socklen_t(MemoryLayout<sockaddr_nl>.size)
            message.msg_iov = iovecs.baseAddress
            message.msg_iovlen = iovecs.count
            return sendmsg(fd, &message, 0)
        }
        guard sent >= 0 else {
            let code = errno
            if code == EMSGSIZE {
                let bytes = (0..<iovecs.count).reduce(0) { $0 + iovecs[$1].iov_len }
                throw BackendError(errno: code, message: "the batch (\(bytes) bytes) exceeds the socket send buffer; without CAP_NET_ADMIN in the initial user namespace raise net.core.wmem_max")
            }
            throw BackendError(errno: code, message: "sending the netlink batch failed: \(errorText(code))")
        }
    }

    /// Sends one small request.
    func send(_ bytes: UnsafeRawBufferPointer) throws(BackendError) {
        guard mnl_socket_sendto(socket, bytes.baseAddress, bytes.count) >= 0 else {
            let code = errno
            throw BackendError(errno: code, message: "sending a netlink request failed: \(errorText(code))")
        }
    }

    /// Sends one request: an nf_tables message of `type` with string attributes `names`, in order.
    func sendRequest(type: UInt16, family: UInt8, flags: UInt16, seq: UInt32, names: [(type: UInt16, value: String)]) throws(BackendError) {
        var writer = MessageWriter(requestBuffer.baseAddress!, capacity: requestBuffer.count)
        writer.begin(type: type, flags: flags, seq: seq, family: family)
        for name in names { writer.put(name.type, string: name.value) }
        let length = writer.end()
        guard !writer.overflowed else { throw BackendError(errno: ENAMETOOLONG, message: "a netlink request does not fit \(requestBuffer.count) bytes") }
        try send(UnsafeRawBufferPointer(start: requestBuffer.baseAddress, count: length))
    }

    enum Received {
        case messages
        /// EAGAIN on a non-blocking read: nothing more is queued.
        case empty
        /// ENOBUFS: the kernel dropped messages because the receive buffer was full.
        case overrun
    }

    /// Receives what is queued, up to `datagramsPerReceive` datagrams in one recvmmsg (blocking:
    /// waits for the first), and hands each message to `body`. The pointers are valid only in `body`.
    func receive(blocking: Bool, each body: (UnsafePointer<nlmsghdr>) throws(BackendError) -> Void) throws(BackendError) -> Received {
        while true {
            let count = cnft_receive_many(fd, receiveVectors.baseAddress, UInt32(receiveVectors.count), receiveLengths.baseAddress, blocking ? 1 : 0)
            if count < 0 {
                let code = errno
                switch code {
                case EINTR: continue
                case EAGAIN where !blocking: return .empty
                case ENOBUFS: return .overrun
                case EAGAIN: throw BackendError(errno: ETIMEDOUT, message: "the kernel did not answer a netlink request within 60 s")
                case EMSGSIZE: throw BackendError(errno: EMSGSIZE, message: "a netlink message does not fit the \(NetlinkSocket.datagramSize)-byte receive buffer")
                default: throw BackendError(errno: code, message: "receiving from netlink failed: \(errorText(code))")
                }
            }
            for index in 0..<Int(count) {
                var remaining = Int32(receiveLengths[index])
                var header = UnsafePointer(receiveVectors[index].iov_base!.assumingMemoryBound(to: nlmsghdr.self))
                while mnl_nlmsg_ok(header, remaining) {
                    try body(header)
                    header = UnsafePointer(mnl_nlmsg_next(header, &remaining))
                }
            }
            return .messages
        }
    }
}

/// An NLMSG_ERROR message: the errno (0 for a plain ack), the request's sequence number and the
/// kernel's extended-ack text, if any.
struct Ack {
    var seq: UInt32
    var errno: Int32
    var text: String?

    init?(_ header: UnsafePointer<nlmsghdr>) {
        guard header.pointee.nlmsg_type == UInt16(NLMSG_ERROR) else { return nil }
        let length = Int(header.pointee.nlmsg_len)
        let headerLength = MemoryLayout<nlmsghdr>.size
        guard length >= headerLength + MemoryLayout<nlmsgerr>.size else { return nil }
        let raw = UnsafeRawPointer(header)
        let error = raw.load(fromByteOffset: headerLength, as: nlmsgerr.self)
        seq = error.msg.nlmsg_seq
        errno = -error.error
        text = nil
        guard header.pointee.nlmsg_flags & UInt16(NLM_F_ACK_TLVS) != 0 else { return }
        // The TLVs follow the echoed request: just its header when capped, all of it otherwise.
        var offset = headerLength + MemoryLayout<Int32>.size
        offset += header.pointee.nlmsg_flags & UInt16(NLM_F_CAPPED) != 0 ? headerLength : Int(error.msg.nlmsg_len)
        offset = (offset + 3) & ~3
        while offset + 4 <= length {
            let attributeLength = Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
            let type = raw.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self) & 0x3fff
            guard attributeLength >= 4, offset + attributeLength <= length else { break }
            if type == UInt16(NLMSGERR_ATTR_MSG.rawValue) {
                let bytes = UnsafeRawBufferPointer(start: raw + offset + 4, count: attributeLength - 4)
                text = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            }
            offset += (attributeLength + 3) & ~3
        }
    }
}

func errorText(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "errno \(code)" }
    return String(cString: text)
}
