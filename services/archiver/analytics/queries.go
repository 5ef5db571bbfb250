package analytics

// handoverReasons end a connection without the device going offline: a
// newer connection took over ('superseded' is a connection that got no
// disconnect at all before the device's next one started).
const handoverReasons = `('takenover', 'discarded', 'superseded')`

// timeline is the core of the outage queries: one row per device seen
// before {to_ms}, with its observed window [obs_from, obs_to) and its
// offline intervals (gaps) inside it.
//
//   - Connections come from sessions, deduplicated by their key (argMax by
//     version: the earliest disconnect wins).
//   - A connection without a disconnect ends when the device's next
//     connection starts (EMQX v4 sends no disconnect for a taken-over
//     session); the last one is still open at {to_ms}.
//   - The device is online while at least one connection is open (a sweep
//     over +1/-1 points, so overlapping connections during a takeover
//     count once). A gap that starts with a takenover/discarded disconnect
//     and is followed by another connection is a handover, not an outage.
//   - obs_from is the later of {from_ms} and the device's first connection
//     ever: time before a device was first seen is not observed.
//   - gaps are (start_ms, end_ms, reason, ongoing); ongoing = 1 when the
//     device had not reconnected by {to_ms}.
//
// Every array step is linear in the device's connections: lambdas take the
// arrays they walk as arguments (the next element comes from a shifted
// copy, arrayPushBack(arrayPopFront(a), last)) instead of indexing a
// captured array, which ClickHouse copies for every element (quadratic:
// 500 connections per device over 10,000 devices needed over 30 GiB).
const timeline = `SELECT
		device_id,
		extract(device_id, {site_pattern}) AS site,
		arraySort(x -> x.1, groupArray((s, d, r))) AS ss,
		length(ss) AS n,
		arrayMap(x -> x.1, ss) AS starts,
		greatest(toUInt64({from_ms}), starts[1]) AS obs_from,
		toUInt64({to_ms}) AS obs_to,
		arrayMap((x, next) -> if(x.2 != 0, greatest(x.2, x.1), next), ss, arrayPushBack(arrayPopFront(starts), obs_to)) AS ends,
		arrayMap((x, i) -> if(x.2 != 0, x.3, if(i < n, 'superseded', '')), ss, arrayEnumerate(ss)) AS reasons,
		arraySort(p -> (p.1, -p.2), arrayConcat(
			arrayMap(t -> (least(greatest(t, obs_from), obs_to), toInt8(1), ''), starts),
			arrayMap((t, r) -> (least(greatest(t, obs_from), obs_to), toInt8(-1), r), ends, reasons))) AS pts,
		length(pts) AS m,
		arrayCumSum(arrayMap(p -> p.2, pts)) AS online,
		arrayFilter(g -> g.2 > g.1, arrayMap((p, o, next, i) -> if(o = 0 AND NOT (i < m AND p.3 IN ` + handoverReasons + `),
			(p.1, next, p.3, toUInt8(i = m)),
			(toUInt64(0), toUInt64(0), '', toUInt8(0))), pts, online, arrayPushBack(arrayPopFront(arrayMap(p -> p.1, pts)), obs_to), arrayEnumerate(pts))) AS gaps
	FROM (
		SELECT device_id, connected_ms AS s, argMax(disconnected_ms, version) AS d, argMax(reason, version) AS r
		FROM {db}.sessions
		WHERE connected_ms < {to_ms} AND ({device} = '' OR device_id = {device})
		GROUP BY device_id, connected_ms, node, conn_version
	)
	GROUP BY device_id
	HAVING {site} = '' OR site = {site}`

// deviceDays splits every device's observed window and its gaps (see
// timeline) into UTC days: one row per device and day with the observed
// and the offline milliseconds of that day. The window and each gap are
// cut into one piece per day they cover (two ARRAY JOINs, in two levels
// for 18.16), then summed per day, so the work is linear in days + gaps.
const deviceDays = `SELECT
		device_id,
		site,
		toDate(toDateTime(dn * 86400)) AS day,
		toInt64(sumIf(part_ms, offline = 0)) AS observed_ms,
		toInt64(sumIf(part_ms, offline = 1)) AS offline_ms
	FROM (
		SELECT
			device_id,
			site,
			intDiv(x.1, 86400000) + k AS dn,
			x.3 AS offline,
			toInt64(least(x.2, dn * 86400000 + 86400000)) - toInt64(greatest(x.1, dn * 86400000)) AS part_ms
		FROM (
			SELECT device_id, site, x
			FROM (
				SELECT device_id, site, arrayConcat([(obs_from, obs_to, toUInt8(0))], arrayMap(g -> (g.1, g.2, toUInt8(1)), gaps)) AS items
				FROM (
					` + timeline + `
				)
			)
			ARRAY JOIN items AS x
		)
		ARRAY JOIN range(toUInt64(intDiv(x.2 - 1, 86400000) - intDiv(x.1, 86400000) + 1)) AS k
	)
	GROUP BY device_id, site, dn`

// Queries returns every documented query, in documentation order.
func Queries() []Query {
	return []Query{
		{
			Name:  "availability",
			Title: "Availability per device over the window",
			Doc: "Observed time, offline time, outages and availability % per device over [from, to). " +
				"A device is observed from the later of from and its first connection ever; it is offline " +
				"in the gaps between its connections (see the timeline rules).",
			SQL: `SELECT
	device_id,
	site,
	round((obs_to - obs_from) / 1000, 3) AS observed_s,
	round(arraySum(arrayMap(g -> g.2 - g.1, gaps)) / 1000, 3) AS offline_s,
	length(gaps) AS outages,
	round(100 * (1 - arraySum(arrayMap(g -> g.2 - g.1, gaps)) / (obs_to - obs_from)), 3) AS availability_pct
FROM (
	` + timeline + `
)
ORDER BY availability_pct, device_id
LIMIT {limit}`,
		},
		{
			Name:  "availability-device-day",
			Title: "Availability per device and UTC day",
			Doc: "Each device's observed and offline seconds and availability % per UTC day of [from, to). " +
				"An outage spanning midnight counts in both days.",
			SQL: `SELECT
	day,
	device_id,
	site,
	round(observed_ms / 1000, 3) AS observed_s,
	round(offline_ms / 1000, 3) AS offline_s,
	round(100 * (1 - offline_ms / observed_ms), 3) AS availability_pct
FROM (
	` + deviceDays + `
)
WHERE observed_ms > 0
ORDER BY day, device_id`,
		},
		{
			Name:  "availability-site-day",
			Title: "Availability per site and UTC day",
			Doc: "Device-time availability per site and UTC day: the sum of the site's devices' offline time " +
				"over the sum of their observed time. The site comes from the device id (site_pattern).",
			SQL: `SELECT
	day,
	site,
	uniqExact(device_id) AS devices,
	round(sum(observed_ms) / 1000, 3) AS observed_s,
	round(sum(offline_ms) / 1000, 3) AS offline_s,
	round(100 * (1 - sum(offline_ms) / sum(observed_ms)), 3) AS availability_pct
FROM (
	` + deviceDays + `
)
WHERE observed_ms > 0
GROUP BY day, site
ORDER BY day, site`,
		},
		{
			Name:  "outages",
			Title: "Outages (offline intervals) with duration",
			Doc: "Every offline interval inside [from, to), clipped to it, with the disconnect reason that " +
				"started it; ongoing = 1 when the device had not reconnected by to. Handovers (takenover, " +
				"discarded, or a connection superseded by the next) are not outages.",
			SQL: `SELECT
	toDateTime(intDiv(g.1, 1000)) AS start,
	toDateTime(intDiv(g.2, 1000)) AS end,
	device_id,
	site,
	round((g.2 - g.1) / 1000, 3) AS duration_s,
	g.3 AS reason,
	g.4 AS ongoing
FROM (
	` + timeline + `
)
ARRAY JOIN gaps AS g
ORDER BY g.1, device_id`,
		},
		{
			Name:  "reliability-device",
			Title: "MTTR and MTBF per device",
			Doc: "Per device over [from, to): outages, offline time, MTTR = mean duration of the outages " +
				"that ended inside the window (0 when none ended), MTBF = online time / outages " +
				"(0 when there was no outage).",
			SQL: `SELECT
	device_id,
	site,
	outages,
	round(offline_ms / 1000, 3) AS offline_s,
	round(if(recovered = 0, 0, recovered_ms / recovered) / 1000, 3) AS mttr_s,
	round(if(outages = 0, 0, (observed_ms - offline_ms) / outages) / 1000, 3) AS mtbf_s,
	round(100 * (1 - offline_ms / observed_ms), 3) AS availability_pct
FROM (
	SELECT
		device_id,
		site,
		toInt64(obs_to - obs_from) AS observed_ms,
		length(gaps) AS outages,
		toInt64(arraySum(arrayMap(g -> g.2 - g.1, gaps))) AS offline_ms,
		arrayCount(g -> g.4 = 0, gaps) AS recovered,
		toInt64(arraySum(arrayMap(g -> if(g.4 = 0, toInt64(g.2) - toInt64(g.1), toInt64(0)), gaps))) AS recovered_ms
	FROM (
		` + timeline + `
	)
)
ORDER BY outages DESC, device_id
LIMIT {limit}`,
		},
		{
			Name:  "reliability-site",
			Title: "MTTR and MTBF per site",
			Doc: "Per site over [from, to): devices, outages, offline time, MTTR = total duration of the " +
				"outages that ended / their number, MTBF = the devices' total online time / outages, " +
				"device-time availability %.",
			SQL: `SELECT
	site,
	uniqExact(device_id) AS devices,
	sum(d_outages) AS outages,
	round(sum(d_offline_ms) / 1000, 3) AS offline_s,
	round(if(sum(d_recovered) = 0, 0, sum(d_recovered_ms) / sum(d_recovered)) / 1000, 3) AS mttr_s,
	round(if(sum(d_outages) = 0, 0, (sum(d_observed_ms) - sum(d_offline_ms)) / sum(d_outages)) / 1000, 3) AS mtbf_s,
	round(100 * (1 - sum(d_offline_ms) / sum(d_observed_ms)), 3) AS availability_pct
FROM (
	SELECT
		device_id,
		site,
		toInt64(obs_to - obs_from) AS d_observed_ms,
		length(gaps) AS d_outages,
		toInt64(arraySum(arrayMap(g -> g.2 - g.1, gaps))) AS d_offline_ms,
		arrayCount(g -> g.4 = 0, gaps) AS d_recovered,
		toInt64(arraySum(arrayMap(g -> if(g.4 = 0, toInt64(g.2) - toInt64(g.1), toInt64(0)), gaps))) AS d_recovered_ms
	FROM (
		` + timeline + `
	)
)
GROUP BY site
ORDER BY site`,
		},
		{
			Name:  "flappers",
			Title: "Top flapping devices",
			Doc: "Devices ranked by disconnects inside [from, to), handovers (takenover, discarded) " +
				"excluded; short = connections that lasted under 60 s; median_session_s is the median " +
				"length of those connections.",
			SQL: `SELECT
	device_id,
	extract(device_id, {site_pattern}) AS site,
	count() AS disconnects,
	countIf(duration_ms < 60000) AS short,
	round(quantileExact(0.5)(duration_ms) / 1000, 3) AS median_session_s,
	toDateTime(intDiv(min(d), 1000)) AS first,
	toDateTime(intDiv(max(d), 1000)) AS last
FROM (
	SELECT device_id, argMax(disconnected_ms, version) AS d, argMax(duration_ms, version) AS duration_ms, argMax(reason, version) AS r
	FROM {db}.sessions
	WHERE connected_ms < {to_ms} AND ({device} = '' OR device_id = {device})
	GROUP BY device_id, connected_ms, node, conn_version
)
WHERE d >= {from_ms} AND d < {to_ms} AND r NOT IN ('takenover', 'discarded')
	AND ({site} = '' OR site = {site})
GROUP BY device_id
ORDER BY disconnects DESC, device_id
LIMIT {limit}`,
		},
		{
			Name:  "mass-outage",
			Title: "Devices offline per minute per site",
			Doc: "For each UTC minute of [from, to) and site, the number of distinct devices offline at " +
				"some time in that minute (minutes with none are left out). Use windows up to a few days.",
			SQL: `SELECT
	toDateTime(mn * 60) AS minute,
	site,
	uniqExact(device_id) AS devices_offline
FROM (
	SELECT device_id, site, start_min + k AS mn
	FROM (
		SELECT device_id, site, intDiv(g.1, 60000) AS start_min, intDiv(g.2 - 1, 60000) AS end_min
		FROM (
			` + timeline + `
		)
		ARRAY JOIN gaps AS g
	)
	ARRAY JOIN range(toUInt64(end_min - start_min + 1)) AS k
)
GROUP BY minute, site
ORDER BY minute, site`,
		},
		{
			Name:  "delivery-health",
			Title: "Notification latency and delivery success per receiver",
			Doc: "Per receiver, for the alerts with a delivery attempt inside [from, to): alerts, " +
				"delivered, failed permanently, still pending (only retryable or rate-limited attempts " +
				"so far), attempts, success % = delivered / alerts, and the latency from the alert's " +
				"creation (evaluator clock) to the end of its first delivered attempt (notifier clock): " +
				"p50, p99, max.",
			SQL: `SELECT
	receiver,
	count() AS alerts,
	countIf(is_delivered = 1) AS delivered,
	countIf(is_delivered = 0 AND is_failed = 1) AS failed,
	countIf(is_delivered = 0 AND is_failed = 0) AS pending,
	sum(attempts) AS attempts,
	round(100 * countIf(is_delivered = 1) / count(), 3) AS success_pct,
	round(quantileExactIf(0.5)(latency_ms, is_delivered = 1 AND created_at_ms > 0) / 1000, 3) AS p50_latency_s,
	round(quantileExactIf(0.99)(latency_ms, is_delivered = 1 AND created_at_ms > 0) / 1000, 3) AS p99_latency_s,
	round(maxIf(latency_ms, is_delivered = 1 AND created_at_ms > 0) / 1000, 3) AS max_latency_s
FROM (
	SELECT
		receiver,
		alert_id,
		is_delivered,
		is_failed,
		attempts,
		created_at_ms,
		toInt64(done_ms) - toInt64(created_at_ms) AS latency_ms
	FROM (
		SELECT
			receiver,
			alert_id,
			max(outcome = 'delivered') AS is_delivered,
			max(outcome = 'permanent') AS is_failed,
			uniqExact(id) AS attempts,
			minIf(at_ms + latency_ms, outcome = 'delivered') AS done_ms
		FROM {db}.deliveries
		WHERE at_ms >= {from_ms} AND at_ms < {to_ms}
		GROUP BY receiver, alert_id
	)
	ANY LEFT JOIN (
		SELECT id AS alert_id, any(created_at_ms) AS created_at_ms
		FROM {db}.alerts
		GROUP BY id
	) USING alert_id
)
GROUP BY receiver
ORDER BY receiver`,
		},
		{
			Name:        "device-history",
			Title:       "What happened to one device between from and to",
			NeedsDevice: true,
			Doc: "Every presence event of the device, every alert listing it (alerts list at most 100 " +
				"devices: a large group outage may not name it), with the silences that muted it or the " +
				"alert that inhibited it, and every delivery attempt of those alerts inside [from, to), " +
				"each once, in time order.",
			SQL: `SELECT toDateTime(intDiv(t_ms, 1000)) AS at, t_ms AS at_ms, what, event, detail
FROM (
	SELECT
		any(broker_ts_ms) AS t_ms,
		'presence' AS what,
		any(kind) AS event,
		concat('node=', any(node), if(any(reason) = '', '', concat(' reason=', any(reason))), if(any(ip) = '', '', concat(' ip=', any(ip)))) AS detail
	FROM {db}.presence_events
	WHERE device_id = {device} AND broker_ts_ms >= {from_ms} AND broker_ts_ms < {to_ms}
	GROUP BY id
	UNION ALL
	SELECT
		any(created_at_ms) AS t_ms,
		'alert' AS what,
		concat(any(kind), ' ', any(status)) AS event,
		concat('receiver=', any(receiver), ' severity=', any(severity), ' devices=', toString(any(devices_total)),
			if(any(silenced) = 1, concat(' silenced', if(empty(any(silence_ids)), '', concat(' by ', arrayStringConcat(any(silence_ids), ',')))), ''),
			if(any(inhibited) = 1, concat(' inhibited by ', any(inhibited_by)), '')) AS detail
	FROM {db}.alerts
	WHERE has(device_ids, {device}) AND created_at_ms >= {from_ms} AND created_at_ms < {to_ms}
	GROUP BY id
	UNION ALL
	SELECT
		any(at_ms) AS t_ms,
		'delivery' AS what,
		any(outcome) AS event,
		concat('receiver=', any(receiver), ' attempt=', toString(any(attempt)), ' latency_ms=', toString(any(latency_ms)), if(any(remote_code) = '', '', concat(' code=', any(remote_code)))) AS detail
	FROM {db}.deliveries
	WHERE at_ms >= {from_ms} AND at_ms < {to_ms}
		AND alert_id GLOBAL IN (SELECT id FROM {db}.alerts WHERE has(device_ids, {device}))
	GROUP BY id
)
ORDER BY t_ms, what, event`,
		},
	}
}
