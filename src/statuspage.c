/* The page is static; everything it shows comes from /status.json, which
 * the page's script fetches every few seconds, so the HTML never embeds
 * data (and nothing the server holds is ever parsed as markup: the script
 * writes text nodes only). */
#include "statuspage.h"

#include <stdio.h>
#include <string.h>

#include "stats.h"
#include "statusfmt.h"


static void sample_one(struct status_series *r, const struct stats_slot *s)
{
    uint64_t msgs = STATS_GET(s->c.msgs_in) + STATS_GET(s->c.msgs_out);
    uint64_t bytes = STATS_GET(s->c.wire_in) + STATS_GET(s->c.wire_out);
    if (r->pid != s->pid) {
        *r = (struct status_series){ .pid = s->pid, .last_msgs = msgs, .last_bytes = bytes };
        return;
    }
    r->msgs[r->head] = (float)(msgs - r->last_msgs) * 1000.0f / STATUS_SAMPLE_MS;
    r->bytes[r->head] = (float)(bytes - r->last_bytes) * 1000.0f / STATUS_SAMPLE_MS;
    r->head = (r->head + 1) % STATUS_SAMPLES;
    if (r->n < STATUS_SAMPLES)
        r->n++;
    r->last_msgs = msgs;
    r->last_bytes = bytes;
}

void status_sample(struct status_series *series)
{
    for (unsigned i = 0; i < STATS_SLOTS; i++) {
        const struct stats_slot *s = &stats->slots[i];
        if (STATS_GET(s->state) != SLOT_FREE && s->pid > 0)
            sample_one(&series[i], s);
        else
            series[i].pid = 0;
    }
}

static void series_json(struct sbuf *b, const char *name, const float *v,
                        const struct status_series *r)
{
    sbuf_printf(b, "\"%s\":[", name);
    for (unsigned k = 0; k < r->n; k++) {
        unsigned at = (r->head + STATUS_SAMPLES - r->n + k) % STATUS_SAMPLES;
        sbuf_printf(b, "%s%.1f", k ? "," : "", (double)v[at]);
    }
    sbuf_add(b, "]", 1);
}

static void workers_json(struct sbuf *b, const struct status_series *series)
{
    int first = 1;
    sbuf_add(b, "\"workers\":[", 11);
    for (unsigned i = 0; i < STATS_SLOTS; i++) {
        const struct stats_slot *s = &stats->slots[i];
        uint32_t st = STATS_GET(s->state);
        if (st == SLOT_FREE || s->pid <= 0)
            continue;
        const struct stats_counters *c = &s->c;
        sbuf_printf(b, "%s{\"slot\":%u,\"generation\":%u,\"pid\":%d,\"state\":\"%s\","
                    "\"started\":%.3f,\"connections\":%lld,\"messages_in\":%llu,"
                    "\"messages_out\":%llu,\"wire_bytes_in\":%llu,\"wire_bytes_out\":%llu,"
                    "\"rss\":%llu,\"sample_seconds\":%u,",
                    first ? "" : ",", s->slot, s->generation, (int)s->pid, status_slot_state[st],
                    s->started_ms / 1000.0, (long long)STATS_GET(s->open),
                    (unsigned long long)STATS_GET(c->msgs_in),
                    (unsigned long long)STATS_GET(c->msgs_out),
                    (unsigned long long)STATS_GET(c->wire_in),
                    (unsigned long long)STATS_GET(c->wire_out),
                    (unsigned long long)status_rss(s->pid), STATUS_SAMPLE_MS / 1000);
        series_json(b, "messages_per_s", series[i].msgs, &series[i]);
        sbuf_add(b, ",", 1);
        series_json(b, "bytes_per_s", series[i].bytes, &series[i]);
        sbuf_add(b, "}", 1);
        first = 0;
    }
    sbuf_add(b, "]", 1);
}

static void master_json(struct sbuf *b)
{
    sbuf_printf(b, "\"version\":\"%s\",\"master\":{\"pid\":%d,\"started\":%.3f,"
                "\"config_file\":\"", WSECHOD_VERSION, (int)stats->master,
                stats->master_started_ms / 1000.0);
    sbuf_json_str(b, stats->config_file);
    sbuf_printf(b, "\",\"config_loaded\":%.3f,\"stopping\":%s,\"healthy\":%s,\"ready\":%s,"
                "\"reloads_ok\":%llu,\"reloads_failed\":%llu},",
                stats->config_loaded_ms / 1000.0, STATS_GET(stats->stopping) ? "true" : "false",
                status_healthy() ? "true" : "false", status_ready() ? "true" : "false",
                (unsigned long long)stats->reloads_ok, (unsigned long long)stats->reloads_failed);
    sbuf_add(b, "\"generations\":[", 15);
    for (unsigned i = 0, first = 1; i < STATS_GENS; i++) {
        const struct stats_gen *g = &stats->gens[i];
        if (g->id == 0 || g->state > 2)
            continue;
        sbuf_printf(b, "%s{\"id\":%u,\"state\":\"%s\",\"workers\":%u,\"started\":%.3f}",
                    first ? "" : ",", g->id, status_gen_state[g->state], g->workers,
                    g->started_ms / 1000.0);
        first = 0;
    }
    sbuf_add(b, "],", 2);
}

static void events_json(struct sbuf *b)
{
    uint32_t n = __atomic_load_n(&stats->nevents, __ATOMIC_ACQUIRE);
    uint32_t from = n > STATS_EVENTS ? n - STATS_EVENTS : 0;
    sbuf_add(b, "\"events\":[", 10);
    for (uint32_t k = n; k > from; k--) { /* newest first */
        const struct stats_event *e = &stats->events[(k - 1) % STATS_EVENTS];
        sbuf_printf(b, "%s{\"time\":%.3f,\"text\":\"", k == n ? "" : ",", e->ms / 1000.0);
        sbuf_json_str(b, e->text);
        sbuf_add(b, "\"}", 2);
    }
    sbuf_add(b, "]", 1);
}

void status_json(struct sbuf *b, const struct status_series *series)
{
    struct stats_counters c;
    stats_sum(&c);
    sbuf_add(b, "{", 1);
    master_json(b);
    sbuf_printf(b, "\"totals\":{\"accepted\":%llu,\"handshakes_ok\":%llu,\"messages_in\":%llu,"
                "\"messages_out\":%llu,\"wire_bytes_in\":%llu,\"wire_bytes_out\":%llu,"
                "\"handoffs_sent\":%llu,\"handoffs_received\":%llu},",
                (unsigned long long)c.accepted, (unsigned long long)c.handshakes[HS_101],
                (unsigned long long)c.msgs_in, (unsigned long long)c.msgs_out,
                (unsigned long long)c.wire_in, (unsigned long long)c.wire_out,
                (unsigned long long)c.handoffs_out, (unsigned long long)c.handoffs_in);
    workers_json(b, series);
    sbuf_add(b, ",", 1);
    events_json(b);
    sbuf_add(b, "}\n", 2);
}

static const char page[] =
"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
"<title>wsechod status</title>\n<style>\n"
"body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\n"
"h1{font-size:1.3em}h2{font-size:1.05em;margin-top:1.5em}\n"
"table{border-collapse:collapse}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;"
"text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}\n"
".ok{color:#080}.bad{color:#b00}svg{background:#fafafa;border:1px solid #ddd}\n"
"</style></head><body>\n"
"<h1>wsechod <span id=\"version\"></span> <span id=\"state\"></span></h1>\n"
"<p id=\"master\"></p>\n"
"<h2>Generations</h2><table id=\"gens\"><thead><tr><th>generation</th><th>state</th>"
"<th>workers</th><th>since</th></tr></thead><tbody></tbody></table>\n"
"<h2>Workers</h2><table id=\"workers\"><thead><tr><th>pid</th><th>slot</th>"
"<th>generation</th><th>state</th><th>connections</th><th>messages in / out</th>"
"<th>RSS</th><th>messages/s</th><th>bytes/s</th></tr></thead><tbody></tbody></table>\n"
"<h2>Recent events</h2><table id=\"events\"><thead><tr><th>time (UTC)</th><th>event</th>"
"</tr></thead><tbody></tbody></table>\n"
"<p><small>Refreshed from <a href=\"status.json\">status.json</a> every 5 s; "
"<a href=\"metrics\">metrics</a>.</small></p>\n"
"<script>\n"
"'use strict';\n"
"const t=s=>new Date(s*1000).toISOString().replace('T',' ').slice(0,19);\n"
"const fmt=n=>n>=1e9?(n/1e9).toFixed(1)+'G':n>=1e6?(n/1e6).toFixed(1)+'M':"
"n>=1e3?(n/1e3).toFixed(1)+'k':String(Math.round(n));\n"
"function cell(tr,v,cls){const td=document.createElement('td');"
"if(v instanceof Node)td.appendChild(v);else td.textContent=v;"
"if(cls)td.className=cls;tr.appendChild(td);}\n"
"function chart(v){const ns='http://www.w3.org/2000/svg',w=180,h=32;"
"const s=document.createElementNS(ns,'svg');s.setAttribute('width',w);"
"s.setAttribute('height',h);const max=Math.max(1,...v);"
"const p=document.createElementNS(ns,'polyline');"
"p.setAttribute('points',v.map((y,i)=>(v.length<2?0:i*w/(v.length-1)).toFixed(1)+','+"
"(h-2-(h-4)*y/max).toFixed(1)).join(' '));p.setAttribute('fill','none');"
"p.setAttribute('stroke','#36c');s.appendChild(p);const l=document.createElementNS(ns,'title');"
"l.textContent='max '+fmt(max)+'/s';s.appendChild(l);return s;}\n"
"function rows(id,list,f){const tb=document.querySelector('#'+id+' tbody');"
"tb.textContent='';for(const x of list){const tr=document.createElement('tr');f(tr,x);"
"tb.appendChild(tr);}}\n"
"function show(d){document.getElementById('version').textContent=d.version;"
"const st=document.getElementById('state');"
"st.textContent=d.master.stopping?'stopping':d.master.ready?'ready':'not ready';"
"st.className=d.master.ready?'ok':'bad';\n"
"document.getElementById('master').textContent='master '+d.master.pid+' up since '+"
"t(d.master.started)+' UTC; configuration '+d.master.config_file+' loaded '+"
"t(d.master.config_loaded)+' UTC; reloads '+d.master.reloads_ok+' ok, '+"
"d.master.reloads_failed+' failed';\n"
"rows('gens',d.generations,(tr,g)=>{cell(tr,g.id);cell(tr,g.state);cell(tr,g.workers);"
"cell(tr,t(g.started));});\n"
"rows('workers',d.workers,(tr,w)=>{cell(tr,w.pid);cell(tr,w.slot);cell(tr,w.generation);"
"cell(tr,w.state);cell(tr,w.connections);cell(tr,fmt(w.messages_in)+' / '+"
"fmt(w.messages_out));cell(tr,fmt(w.rss)+'B');cell(tr,chart(w.messages_per_s));"
"cell(tr,chart(w.bytes_per_s));});\n"
"rows('events',d.events,(tr,e)=>{cell(tr,t(e.time));cell(tr,e.text);});}\n"
"async function tick(){try{const r=await fetch('status.json',{cache:'no-store'});"
"show(await r.json());}catch(e){const st=document.getElementById('state');"
"st.textContent='unreachable';st.className='bad';}}\n"
"tick();setInterval(tick,5000);\n"
"</script></body></html>\n";

void status_html(struct sbuf *b)
{
    sbuf_add(b, page, sizeof(page) - 1);
}
