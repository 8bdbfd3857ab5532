// libFuzzer harness for the ESP receive path (placeholder until IPsecKeys lands).
@main struct Main { static func main() {} }
