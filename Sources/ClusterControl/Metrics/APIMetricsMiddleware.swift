import Hummingbird
import HTTPTypes

/// Counts and times every request of one API (`overlay_api_requests_total`,
/// `overlay_api_request_duration_seconds`) by its route (the router's path pattern, so the
/// series are as many as the routes), method and status code. Goes outermost, so an error the
/// API answers (404, 403, 500) counts with its own code.
struct APIMetricsMiddleware: RouterMiddleware {
    typealias Context = APIContext
    let metrics: DaemonMetrics
    let api: String

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let response: Response
        do { response = try await next(request, context) } catch {
            let e = APIErrorMiddleware.apiError(error, request)
            observe(request, context, code: e.status, since: start)
            throw error
        }
        observe(request, context, code: response.status.code, since: start)
        return response
    }

    private func observe(_ request: Request, _ context: APIContext, code: Int, since start: ContinuousClock.Instant) {
        let route = context.endpointPath ?? "unmatched"
        let labels: KeyValuePairs<String, String> = ["api": api, "route": route, "method": request.method.rawValue, "code": "\(code)"]
        metrics.increment("overlay_api_requests_total", labels)
        metrics.record("overlay_api_request_duration_seconds", labels, ContinuousClock.now - start)
    }
}
