// swift-tools-version: 6.0
import PackageDescription

// Layering (see ../shared/DESIGN.md): ServiceModel → NftIR → RuleCompiler → NftText / NftNetlink → nftproxy.
// Only NftNetlink imports CNftables; only the nftproxy executable does I/O on files and argv.
let package = Package(
    name: "nftproxy",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "nftproxy", targets: ["nftproxy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        .target(name: "ServiceModel", dependencies: [.product(name: "Yams", package: "Yams")]),
        .target(name: "NftIR", dependencies: ["ServiceModel"]),
        .target(name: "RuleCompiler", dependencies: ["ServiceModel", "NftIR"]),
        .target(name: "NftText", dependencies: ["NftIR"]),
        .target(name: "NftExplain", dependencies: ["ServiceModel", "NftIR", "NftText"]),
        .target(
            name: "CNftables",
            path: "CNftables",
            linkerSettings: [.linkedLibrary("nftnl"), .linkedLibrary("mnl")]
        ),
        .target(name: "NftNetlink", dependencies: ["NftIR", "CNftables"]),
        // The node agent's control loop; talks to the kernel only through the RulesetBackend seam.
        .target(name: "ProxyController", dependencies: [
            "ServiceModel", "NftIR", "RuleCompiler", .product(name: "Logging", package: "swift-log"),
        ]),
        // Lists and watches the API server; feeds the controller's store.
        .target(name: "KubeSource", dependencies: [
            "ServiceModel", "ProxyController",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Yams", package: "Yams"),
        ]),
        // The agent's HTTP endpoints: /healthz, /livez, /metrics, debug dumps, health-check node ports.
        .target(name: "AgentHTTP", dependencies: [
            "ProxyController", "NftIR", "NftText", "RuleCompiler", "ServiceModel",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .executableTarget(
            name: "nftproxy",
            dependencies: [
                "ServiceModel", "NftIR", "RuleCompiler", "NftText", "NftExplain", "NftNetlink", "ProxyController",
                "AgentHTTP", "KubeSource",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Benchmarks (scripts/bench): state and peer-layout generators, in-process timings.
        .executableTarget(name: "nftproxy-bench", dependencies: ["ServiceModel", "NftIR", "RuleCompiler", "NftText", "NftNetlink", "ProxyController"]),
        .testTarget(name: "ServiceModelTests", dependencies: ["ServiceModel"]),
        .testTarget(
            name: "RuleCompilerTests",
            dependencies: ["ServiceModel", "NftIR", "RuleCompiler", "NftText"],
            exclude: ["Fixtures"]
        ),
        .testTarget(name: "NftTextTests", dependencies: ["NftIR", "NftText"]),
        .testTarget(name: "NftExplainTests", dependencies: ["NftExplain", "NftIR", "RuleCompiler", "ServiceModel"], exclude: ["Fixtures"]),
        .testTarget(name: "ProxyControllerTests", dependencies: ["ProxyController", "ServiceModel", "NftIR", "RuleCompiler"]),
        .testTarget(name: "AgentHTTPTests", dependencies: ["AgentHTTP", "ProxyController", "NftIR", "RuleCompiler", "ServiceModel"]),
        .testTarget(name: "KubeSourceTests", dependencies: [
            "KubeSource", "ProxyController", "ServiceModel", "NftIR", .product(name: "Logging", package: "swift-log"),
        ]),
        // Needs root: each test works in a fresh network namespace that it removes.
        .testTarget(name: "KernelTests", dependencies: ["ServiceModel", "NftIR", "RuleCompiler", "NftText"]),
        .testTarget(name: "NftNetlinkTests", dependencies: ["NftNetlink", "NftIR", "NftText", "ServiceModel", "RuleCompiler"]),
        // Needs root for the kernel cases: each works in a fresh network namespace that it removes.
        .testTarget(name: "ConntrackTests", dependencies: ["NftNetlink", "NftIR", "ServiceModel"]),
    ]
)
