"""The web console in a real browser (Debian's chromium and chromedriver, via Selenium).

Usage: console_check.py HTTP SCREENSHOT.png

Loads the console a `wharf up` serves at /, sees the health pill say "up", creates a queue
address `orders` with the form, waits until its row shows Ready and a backlog, tries a bad
name and sees the API's message shown, and saves a screenshot.
"""

import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

http, shot = int(sys.argv[1]), sys.argv[2]
options = Options()
options.binary_location = "/usr/bin/chromium"
for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"]:
    options.add_argument(arg)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    start = time.time()
    driver.get(f"http://127.0.0.1:{http}/")
    wait = WebDriverWait(driver, 20)
    wait.until(ec.text_to_be_present_in_element((By.ID, "health"), "up"))
    assert driver.title == "Wharf console", driver.title
    print(f"ok loaded in {time.time() - start:.2f} s")
    driver.find_element(By.ID, "new-name").send_keys("orders")
    driver.find_element(By.ID, "new-topics").send_keys("orders/#")
    driver.find_element(By.ID, "create-button").click()
    row = '#addresses tr[data-name="orders"]'
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, row)))
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, row), "Ready"))
    cells = [c.text for c in driver.find_elements(By.CSS_SELECTOR, row + " td")]
    assert cells[0] == "orders" and cells[1] == "queue" and cells[2] == "orders/#", cells
    print(f"ok created orders, Ready: {cells[:4]}")
    # The backlog column fills in (every 5 s).
    WebDriverWait(driver, 20).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, row + " td")[4].text not in ("", "-")
    )
    backlog = driver.find_elements(By.CSS_SELECTOR, row + " td")[4].text
    print(f"ok backlog shown: {backlog}")
    # A name the API refuses: its message is shown.
    driver.find_element(By.ID, "new-name").send_keys("orders")
    driver.find_element(By.ID, "create-button").click()
    wait.until(lambda d: d.find_element(By.ID, "create-error").text != "")
    print(f"ok refusal shown: {driver.find_element(By.ID, 'create-error').text}")
    time.sleep(2.5)  # one more refresh: rates and connections filled in
    driver.save_screenshot(shot)
    print(f"ok screenshot {shot}")
finally:
    driver.quit()
