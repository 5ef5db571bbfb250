package ingest

import paho "github.com/eclipse/paho.mqtt.golang"

// TuneClient gives a benchmark's paho client ingest's connection tuning
// (buffered reads, no client-side store).
func TuneClient(o *paho.ClientOptions) *paho.ClientOptions {
	return o.SetCustomOpenConnectionFn(openConn).SetStore(noStore{})
}
